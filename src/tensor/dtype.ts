// Data types and conversions. Weights may be stored as f32, f16 or bf16; compute is f32.
// Conversions are exact (f16/bf16 → f32) or round-to-nearest-even (f32 → f16/bf16).

export type DType = 'f32' | 'f16' | 'bf16' | 'i32';

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, i32: 4 };

/** Typed array used to hold each dtype on the host (f16/bf16 are raw 16-bit patterns). */
export type HostArray = Float32Array | Uint16Array | Int32Array;

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** IEEE half (as its 16-bit pattern) → f32. Exact, handles subnormals, inf and NaN. */
export function f16ToF32(h: number): number {
  const s = (h & 0x8000) ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** bfloat16 (16-bit pattern) → f32: the upper half of an f32. */
export function bf16ToF32(h: number): number {
  u32buf[0] = h << 16;
  return f32buf[0];
}

/** f32 → bfloat16 bit pattern, round to nearest even (NaN kept quiet). */
export function f32ToBf16(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >> 16) & 1)) >>> 16) & 0xffff;
}

/** f32 → IEEE half bit pattern, round to nearest even, overflow to inf. */
export function f32ToF16(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) {
    r++;
    if (r === 0x400) { r = 0; e++; if (e >= 31) return sign | 0x7c00; }
  }
  return sign | (e << 10) | r;
}

/** Widen a host array of any float dtype to a fresh Float32Array. */
export function toF32(data: HostArray, dtype: DType): Float32Array {
  if (dtype === 'f32') return new Float32Array(data as Float32Array);
  const out = new Float32Array(data.length);
  if (dtype === 'bf16') {
    const o32 = new Uint32Array(out.buffer);
    for (let i = 0; i < data.length; i++) o32[i] = data[i] << 16;
  } else if (dtype === 'f16') {
    // NOTE: a 64K-entry table makes f16 widening a single lookup per element.
    const lut = f16Table();
    for (let i = 0; i < data.length; i++) out[i] = lut[data[i]];
  } else {
    for (let i = 0; i < data.length; i++) out[i] = data[i];
  }
  return out;
}

let F16_LUT: Float32Array | undefined;
function f16Table(): Float32Array {
  if (!F16_LUT) {
    F16_LUT = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) F16_LUT[i] = f16ToF32(i);
  }
  return F16_LUT;
}

/** Narrow f32 values to a 16-bit pattern array (f16 or bf16). */
export function fromF32(data: Float32Array, dtype: 'f16' | 'bf16'): Uint16Array {
  const out = new Uint16Array(data.length);
  const f = dtype === 'f16' ? f32ToF16 : f32ToBf16;
  for (let i = 0; i < data.length; i++) out[i] = f(data[i]);
  return out;
}
