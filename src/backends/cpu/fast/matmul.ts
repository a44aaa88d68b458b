// Fast f32 matmul for the CPU backend: WebAssembly SIMD kernels (matmul.wat) behind a register-tiled JS
// kernel and a naive loop, chosen by shape (`matmulPath`). All three are checked against a float64 naive
// reference in test/fast-matmul.test.ts; speed is measured by bench/matmul.ts, never asserted.
// Limits: f32, contiguous row-major operands, one thread, synchronous. The WASM path copies its operands
// into one reusable linear memory per call (O(MK + NK + MN) bytes against O(MNK) work; see README.md).

import { ShapeError } from '../../../util/errors.ts';
import { MATMUL_WASM_BASE64 } from './matmul-wasm.gen.ts';

/** Which implementation `matmulF32` runs for a shape. */
export type MatmulPath = 'naive' | 'js' | 'wasm';

/** Signature shared by every implementation here (see `matmulF32`). */
export type MatmulF32Fn = (out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transB: boolean, aOff?: number, bOff?: number, outOff?: number, accumulate?: boolean) => void;

// Below this many multiply-adds the fixed cost of the WASM path (copies, a few calls) is not repaid and the
// naive loop is as fast as anything else. Measured with bench/matmul.ts (see README.md).
const NAIVE_MAX_MACS = 2048;
const WASM_MIN_MACS = 16384;
// Operands above this many bytes in linear memory make the WASM path split M into row chunks.
const WASM_MAX_BYTES = 1 << 30;

/**
 * out[M,N] (+)= a[M,K] @ op(b), op(b) = b[N,K]^T if transB else b[K,N]. Row-major, contiguous, f32.
 * Offsets (in elements) address one batch slice inside bigger arrays; accumulate=false overwrites out.
 * Picks the fastest correct path for the shape (`matmulPath`).
 *
 * @example
 * // logits[T, V] = x[T, C] @ W[V, C]^T  (nn.Linear layout)
 * matmulF32(logits, x, W, T, V, C, true);
 */
export function matmulF32(out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transB: boolean, aOff = 0, bOff = 0, outOff = 0, accumulate = false): void {
  checkArgs('matmulF32', out, a, b, M, N, K, aOff, bOff, outOff);
  const path = matmulPath(M, N, K, transB);
  if (path === 'wasm') wasmMatmul(out, a, b, M, N, K, transB, aOff, bOff, outOff, accumulate);
  else if (path === 'js') jsMatmul(out, a, b, M, N, K, transB, aOff, bOff, outOff, accumulate);
  else naiveMatmul(out, a, b, M, N, K, transB, aOff, bOff, outOff, accumulate);
}

/** The path `matmulF32` takes for a shape: 'wasm' when SIMD WebAssembly loads and the shape is big enough. */
export function matmulPath(M: number, N: number, K: number, _transB: boolean): MatmulPath {
  const macs = M * N * K;
  if (macs <= NAIVE_MAX_MACS) return 'naive';
  if (macs >= WASM_MIN_MACS && wasmAvailable() && 4 * N * K <= WASM_MAX_BYTES) return 'wasm';
  return 'js';
}

/** The obviously correct triple loop (float64 sums). Same contract as `matmulF32`. */
export function matmulF32Naive(out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transB: boolean, aOff = 0, bOff = 0, outOff = 0, accumulate = false): void {
  checkArgs('matmulF32Naive', out, a, b, M, N, K, aOff, bOff, outOff);
  naiveMatmul(out, a, b, M, N, K, transB, aOff, bOff, outOff, accumulate);
}

/** The register-tiled pure-JS kernel (float64 sums). Same contract as `matmulF32`. */
export function matmulF32Js(out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transB: boolean, aOff = 0, bOff = 0, outOff = 0, accumulate = false): void {
  checkArgs('matmulF32Js', out, a, b, M, N, K, aOff, bOff, outOff);
  jsMatmul(out, a, b, M, N, K, transB, aOff, bOff, outOff, accumulate);
}

/** The WebAssembly SIMD kernel (f32 sums), for any shape. Throws if SIMD WebAssembly is unavailable. */
export function matmulF32Wasm(out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transB: boolean, aOff = 0, bOff = 0, outOff = 0, accumulate = false): void {
  checkArgs('matmulF32Wasm', out, a, b, M, N, K, aOff, bOff, outOff);
  if (!wasmAvailable()) throw new Error('matmulF32Wasm: WebAssembly SIMD is not available in this runtime');
  wasmMatmul(out, a, b, M, N, K, transB, aOff, bOff, outOff, accumulate);
}

function checkArgs(op: string, out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  aOff: number, bOff: number, outOff: number): void {
  for (const [name, v] of [['M', M], ['N', N], ['K', K], ['aOff', aOff], ['bOff', bOff], ['outOff', outOff]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new ShapeError(op, `${name} must be an integer >= 0, found ${v}`);
  }
  // NOTE: a short array would otherwise read as undefined → NaN (JS) or copy garbage (WASM), silently.
  for (const [name, arr, off, need] of [['a', a, aOff, M * K], ['b', b, bOff, K * N], ['out', out, outOff, M * N]] as const) {
    if (off + need > arr.length) {
      throw new ShapeError(op, `${name} needs ${need} floats from offset ${off} (M=${M}, N=${N}, K=${K}), found length ${arr.length}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Naive and tiled JS. Both sum in float64 (JS numbers), so they are at least as accurate as f32 summation.

function naiveMatmul(out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transB: boolean, aOff: number, bOff: number, outOff: number, accumulate: boolean): void {
  // b element (k, n) sits at bOff + k*sk + n*sn
  const sk = transB ? 1 : N, sn = transB ? K : 1;
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = accumulate ? out[outOff + i * N + j] : 0;
      for (let k = 0; k < K; k++) s += a[aOff + i * K + k] * b[bOff + k * sk + j * sn];
      out[outOff + i * N + j] = s;
    }
  }
}

// Rows of a per block: the block (JS_MC x K floats) stays in L2 while a tile of b is reused over it.
const JS_MC = 64;

function jsMatmul(out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transB: boolean, aOff: number, bOff: number, outOff: number, accumulate: boolean): void {
  for (let i0 = 0; i0 < M; i0 += JS_MC) {
    const i1 = Math.min(M, i0 + JS_MC);
    if (transB) jsNT(out, a, b, i0, i1, N, K, aOff, bOff, outOff, accumulate);
    else jsNN(out, a, b, i0, i1, N, K, aOff, bOff, outOff, accumulate);
  }
}

// transB: out[i, j] = dot(a row i, b row j), both rows contiguous. Tiles of 2 a-rows x 4 b-rows keep 8
// independent sums in registers and load each a and b value once per 2 or 4 uses.
function jsNT(out: Float32Array, a: Float32Array, b: Float32Array, i0: number, i1: number, N: number, K: number,
  aOff: number, bOff: number, outOff: number, acc: boolean): void {
  const N4 = N - (N % 4);
  for (let j = 0; j < N4; j += 4) {
    const b0 = bOff + j * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
    let i = i0;
    for (; i + 1 < i1; i += 2) {
      const a0 = aOff + i * K, a1 = a0 + K;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      for (let k = 0; k < K; k++) {
        const x0 = a[a0 + k], x1 = a[a1 + k];
        let y = b[b0 + k]; s00 += x0 * y; s10 += x1 * y;
        y = b[b1 + k]; s01 += x0 * y; s11 += x1 * y;
        y = b[b2 + k]; s02 += x0 * y; s12 += x1 * y;
        y = b[b3 + k]; s03 += x0 * y; s13 += x1 * y;
      }
      const o = outOff + i * N + j;
      if (acc) {
        out[o] += s00; out[o + 1] += s01; out[o + 2] += s02; out[o + 3] += s03;
        out[o + N] += s10; out[o + N + 1] += s11; out[o + N + 2] += s12; out[o + N + 3] += s13;
      } else {
        out[o] = s00; out[o + 1] = s01; out[o + 2] = s02; out[o + 3] = s03;
        out[o + N] = s10; out[o + N + 1] = s11; out[o + N + 2] = s12; out[o + N + 3] = s13;
      }
    }
    if (i < i1) {
      const a0 = aOff + i * K;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let k = 0; k < K; k++) {
        const x = a[a0 + k];
        s0 += x * b[b0 + k]; s1 += x * b[b1 + k]; s2 += x * b[b2 + k]; s3 += x * b[b3 + k];
      }
      const o = outOff + i * N + j;
      if (acc) { out[o] += s0; out[o + 1] += s1; out[o + 2] += s2; out[o + 3] += s3; }
      else { out[o] = s0; out[o + 1] = s1; out[o + 2] = s2; out[o + 3] = s3; }
    }
  }
  for (let j = N4; j < N; j++) {
    const bj = bOff + j * K;
    for (let i = i0; i < i1; i++) {
      const ai = aOff + i * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += a[ai + k] * b[bj + k];
      const o = outOff + i * N + j;
      out[o] = acc ? out[o] + s : s;
    }
  }
}

// no transB: out[i, j..j+4] = sum_k a[i, k] * b[k, j..j+4]. Tiles of 2 a-rows x 4 columns: per k, two
// a values and four contiguous b values feed 8 independent sums.
function jsNN(out: Float32Array, a: Float32Array, b: Float32Array, i0: number, i1: number, N: number, K: number,
  aOff: number, bOff: number, outOff: number, acc: boolean): void {
  const N4 = N - (N % 4);
  for (let j = 0; j < N4; j += 4) {
    const bj = bOff + j;
    let i = i0;
    for (; i + 1 < i1; i += 2) {
      const a0 = aOff + i * K, a1 = a0 + K;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      for (let k = 0, bk = bj; k < K; k++, bk += N) {
        const x0 = a[a0 + k], x1 = a[a1 + k];
        const y0 = b[bk], y1 = b[bk + 1], y2 = b[bk + 2], y3 = b[bk + 3];
        s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
        s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
      }
      const o = outOff + i * N + j;
      if (acc) {
        out[o] += s00; out[o + 1] += s01; out[o + 2] += s02; out[o + 3] += s03;
        out[o + N] += s10; out[o + N + 1] += s11; out[o + N + 2] += s12; out[o + N + 3] += s13;
      } else {
        out[o] = s00; out[o + 1] = s01; out[o + 2] = s02; out[o + 3] = s03;
        out[o + N] = s10; out[o + N + 1] = s11; out[o + N + 2] = s12; out[o + N + 3] = s13;
      }
    }
    if (i < i1) {
      const a0 = aOff + i * K;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let k = 0, bk = bj; k < K; k++, bk += N) {
        const x = a[a0 + k];
        s0 += x * b[bk]; s1 += x * b[bk + 1]; s2 += x * b[bk + 2]; s3 += x * b[bk + 3];
      }
      const o = outOff + i * N + j;
      if (acc) { out[o] += s0; out[o + 1] += s1; out[o + 2] += s2; out[o + 3] += s3; }
      else { out[o] = s0; out[o + 1] = s1; out[o + 2] = s2; out[o + 3] = s3; }
    }
  }
  for (let j = N4; j < N; j++) {
    for (let i = i0; i < i1; i++) {
      const ai = aOff + i * K;
      let s = 0;
      for (let k = 0, bk = bOff + j; k < K; k++, bk += N) s += a[ai + k] * b[bk];
      const o = outOff + i * N + j;
      out[o] = acc ? out[o] + s : s;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// WebAssembly SIMD. One module, one memory, grown on demand and reused: no allocation per call once the
// largest shape has been seen. Kernel contracts (padding, tiles) are documented in matmul.wat.

interface WasmExports {
  nt(out: number, ldo: number, a: number, lda: number, b: number, ldb: number, m: number, n: number, k: number, init: number): void;
  nn(out: number, ldo: number, a: number, lda: number, b: number, bk: number, bp: number, m: number, np: number, k: number, init: number): void;
  pack_nn(dst: number, src: number, k: number, n: number, np: number): void;
  sum(ptr: number, bytes: number): number;
}

/** The compiled kernel module instantiated on `memory` (used by bandwidth.ts with a memory of its own). */
export function instantiateFastWasm(memory: WebAssembly.Memory): WasmExports {
  const inst = new WebAssembly.Instance(wasmModule(), { env: { mem: memory } });
  return inst.exports as unknown as WasmExports;
}

let moduleCache: WebAssembly.Module | undefined;
function wasmModule(): WebAssembly.Module {
  if (!moduleCache) {
    // atob rather than Buffer so the same code runs in browsers; the module is < 4 KiB, small enough for
    // the synchronous compile browsers allow on the main thread.
    const bin = atob(MATMUL_WASM_BASE64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    moduleCache = new WebAssembly.Module(bytes);
  }
  return moduleCache;
}

let wasmState: { mem: WebAssembly.Memory; k: WasmExports; f32: Float32Array } | null | undefined;

/** True when the WebAssembly SIMD kernels compiled in this runtime (they need SIMD support). */
export function wasmAvailable(): boolean {
  if (wasmState === undefined) {
    try {
      const mem = new WebAssembly.Memory({ initial: 1 });
      wasmState = { mem, k: instantiateFastWasm(mem), f32: new Float32Array(mem.buffer) };
    } catch {
      wasmState = null; // no SIMD: every shape takes the JS path
    }
  }
  return wasmState !== null;
}

function wasmF32(bytes: number): Float32Array {
  const st = wasmState!;
  const have = st.mem.buffer.byteLength;
  if (have < bytes) {
    st.mem.grow(Math.ceil((bytes - have) / 65536));
    // grow() detaches the old buffer: every view must be re-made
    st.f32 = new Float32Array(st.mem.buffer);
  }
  return st.f32;
}

// Blocking of the WASM driver: KC values of k per kernel call (partial sums go through out), MC rows of a
// per call so the a block (MC x KC floats = 128 KiB) stays in L2 while each b tile is reused over it.
const W_KC = 512;
const W_MC = 64;
// no-transB with at least this many rows packs b into 8-column panels (contiguous reads, no 4K aliasing);
// fewer rows read b in place, because packing costs a full pass over b.
const PACK_MIN_M = 16;
const SLACK = 64; // bytes after every region: kernels read whole tiles past row ends

const align64 = (x: number) => (x + 63) & ~63;

function wasmMatmul(out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transB: boolean, aOff: number, bOff: number, outOff: number, accumulate: boolean): void {
  if (M === 0 || N === 0) return;
  if (K === 0) { if (!accumulate) out.fill(0, outOff, outOff + M * N); return; }
  const ldo = transB ? (N + 3) & ~3 : (N + 7) & ~7;
  const np = ldo >> 3;
  const pack = !transB && M >= PACK_MIN_M;
  // b region: N rows rounded up to 4 for NT (the kernel reads whole 4-row tiles)
  const bBytes = align64(4 * (transB ? ldo * K : K * N) + SLACK);
  const pBytes = pack ? align64(32 * np * K) : 0;
  const rowBytes = 4 * (K + ldo);
  // Split M so that the a and out regions stay under WASM_MAX_BYTES (b is copied once per chunk).
  const rows = Math.max(1, Math.min(M, Math.floor((WASM_MAX_BYTES - bBytes - pBytes) / rowBytes)));
  const aBytes = align64(4 * rows * K + SLACK);
  const oBytes = align64(4 * rows * ldo + SLACK);
  const B = 0, P = bBytes, A = P + pBytes, O = A + aBytes;
  const f32 = wasmF32(O + oBytes);
  const k = wasmState!.k;

  f32.set(b.subarray(bOff, bOff + K * N), B >> 2);
  if (pack) k.pack_nn(P, B, K, N, np);

  for (let r0 = 0; r0 < M; r0 += rows) {
    const m = Math.min(rows, M - r0);
    f32.set(a.subarray(aOff + r0 * K, aOff + (r0 + m) * K), A >> 2);
    if (accumulate) copyRows(f32, O >> 2, ldo, out, outOff + r0 * N, N, m, true);
    for (let i0 = 0; i0 < m; i0 += W_MC) {
      const mc = Math.min(W_MC, m - i0);
      for (let k0 = 0; k0 < K; k0 += W_KC) {
        const kc = Math.min(W_KC, K - k0);
        const init = k0 === 0 && !accumulate ? 1 : 0;
        const o = O + 4 * i0 * ldo, ap = A + 4 * (i0 * K + k0);
        if (transB) k.nt(o, ldo, ap, K, B + 4 * k0, K, mc, N, kc, init);
        else if (pack) k.nn(o, ldo, ap, K, P + 32 * k0, 32, 32 * K, mc, np, kc, init);
        else k.nn(o, ldo, ap, K, B + 4 * k0 * N, 4 * N, 32, mc, np, kc, init);
      }
    }
    copyRows(f32, O >> 2, ldo, out, outOff + r0 * N, N, m, false);
  }
}

// Copies m rows of N floats between the padded wasm out (leading dim ldo) and the caller's out.
function copyRows(f32: Float32Array, o: number, ldo: number, out: Float32Array, outOff: number, N: number,
  m: number, toWasm: boolean): void {
  if (ldo === N) {
    if (toWasm) f32.set(out.subarray(outOff, outOff + m * N), o);
    else out.set(f32.subarray(o, o + m * N), outOff);
    return;
  }
  for (let i = 0; i < m; i++) {
    if (toWasm) f32.set(out.subarray(outOff + i * N, outOff + (i + 1) * N), o + i * ldo);
    else out.set(f32.subarray(o + i * ldo, o + i * ldo + N), outOff + i * N);
  }
}
