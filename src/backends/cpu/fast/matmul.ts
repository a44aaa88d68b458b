// Fast f32 matmul for the CPU backend: WebAssembly SIMD kernels (matmul.wat), a register-tiled JS kernel
// and a naive loop, chosen by shape (`matmulPath`); all checked against a float64 reference in
// test/fast-matmul.test.ts and timed by bench/matmul.ts. Synchronous; f32, contiguous row-major operands.
// The WASM path copies operands into its memory unless they live there (`allocF32`), and splits big
// products over helper threads once `startMatmulThreads` has run. Measured numbers: README.md.

import { ShapeError, UsageError } from '../../../util/errors.ts';
import { MATMUL_WASM_BASE64, MATMUL_WASM_SHARED_BASE64 } from './matmul-wasm.gen.ts';

/** Which implementation `matmulF32` runs for a shape. */
export type MatmulPath = 'naive' | 'js' | 'wasm';

/** Signature shared by every implementation here (see `matmulF32`). */
export type MatmulF32Fn = (out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transB: boolean, aOff?: number, bOff?: number, outOff?: number, accumulate?: boolean) => void;

// Crossovers measured on this project's 2-core EPYC box: up to ~1K multiply-adds the naive loop is as fast
// as anything; below ~8K the fixed cost of the WASM path (copies, calls: a few us) is not repaid.
const NAIVE_MAX_MACS = 1024;
const WASM_MIN_MACS = 8192;
// Operands above this many bytes in linear memory make the WASM path split M into row chunks.
const WASM_MAX_BYTES = 1 << 30;

/**
 * out[M,N] (+)= a[M,K] @ op(b), op(b) = b[N,K]^T if transB else b[K,N]. Row-major, contiguous, f32.
 * Offsets (in elements) address one batch slice inside bigger arrays; accumulate=false overwrites out.
 * Picks the fastest correct path for the shape (`matmulPath`). Decode (small M) is bound by reading b:
 * give it weights from `allocF32` so they are not copied per call. The JS paths sum in float64, the WASM
 * path in f32 (4-lane partial sums): results differ in the last bits, within f32 summation error.
 *
 * @example
 * // logits[T, V] = x[T, C] @ W[V, C]^T  (nn.Linear layout)
 * matmulF32(logits, x, W, T, V, C, true);
 */
export function matmulF32(out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transB: boolean, aOff = 0, bOff = 0, outOff = 0, accumulate = false): void {
  checkArgs('matmulF32', out, a, b, M, N, K, aOff, bOff, outOff);
  const path = matmulPath(M, N, K, transB);
  if (path === 'wasm' && wasmMatmul(out, a, b, M, N, K, transB, aOff, bOff, outOff, accumulate)) return;
  if (path !== 'naive') jsMatmul(out, a, b, M, N, K, transB, aOff, bOff, outOff, accumulate);
  else naiveMatmul(out, a, b, M, N, K, transB, aOff, bOff, outOff, accumulate);
}

/** The path `matmulF32` takes for a shape: 'wasm' when SIMD WebAssembly loads and the shape is big enough
 * (it falls back to 'js' at run time only if the WASM memory cannot grow to hold the operands). */
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
  if (!wasmAvailable()) throw new UsageError('matmulF32Wasm: WebAssembly SIMD is not available in this runtime');
  if (!wasmMatmul(out, a, b, M, N, K, transB, aOff, bOff, outOff, accumulate)) {
    throw new UsageError(`matmulF32Wasm: the WASM memory cannot hold the operands of M=${M}, N=${N}, K=${K}`,
      'use matmulF32, which falls back to JS');
  }
}

function checkArgs(op: string, out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  aOff: number, bOff: number, outOff: number): void {
  for (const [name, v] of [['M', M], ['N', N], ['K', K], ['aOff', aOff], ['bOff', bOff], ['outOff', outOff]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new ShapeError(op, `${name} must be an integer >= 0, found ${v}`);
  }
  // NOTE: a short array would otherwise read as undefined → NaN (JS) or copy garbage (WASM), silently.
  const operands = [['a', a, aOff, M * K], ['b', b, bOff, K * N], ['out', out, outOff, M * N]] as const;
  for (const [name, arr, off, need] of operands) {
    if (off + need > arr.length) {
      throw new ShapeError(op,
        `${name} needs ${need} floats from offset ${off} (M=${M}, N=${N}, K=${K}), found length ${arr.length}`);
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

// no-transB with at most this many rows: row updates (jsNNRows) instead of tiles that stride down b.
const JS_ROWS_MAX_M = 4;

function jsMatmul(out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transB: boolean, aOff: number, bOff: number, outOff: number, accumulate: boolean): void {
  if (!transB && M <= JS_ROWS_MAX_M) {
    jsNNRows(out, a, b, M, N, K, aOff, bOff, outOff, accumulate);
    return;
  }
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
      store2x4(out, outOff + i * N + j, N, acc, s00, s01, s02, s03, s10, s11, s12, s13);
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

let rowAcc = new Float64Array(1024);

// no transB, few rows (decode): out row i = sum_k a[i, k] * (b row k), 4 b rows per pass over a float64
// row of sums, so b is read along its rows; tiles (jsNN) would stride down b's columns, one line per k.
function jsNNRows(out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  aOff: number, bOff: number, outOff: number, acc: boolean): void {
  if (rowAcc.length < N) rowAcc = new Float64Array(N);
  const s = rowAcc;
  for (let i = 0; i < M; i++) {
    const ai = aOff + i * K, o = outOff + i * N;
    for (let j = 0; j < N; j++) s[j] = acc ? out[o + j] : 0;
    let k = 0;
    for (; k + 3 < K; k += 4) {
      const x0 = a[ai + k], x1 = a[ai + k + 1], x2 = a[ai + k + 2], x3 = a[ai + k + 3];
      const r0 = bOff + k * N, r1 = r0 + N, r2 = r1 + N, r3 = r2 + N;
      for (let j = 0; j < N; j++) s[j] += x0 * b[r0 + j] + x1 * b[r1 + j] + x2 * b[r2 + j] + x3 * b[r3 + j];
    }
    for (; k < K; k++) {
      const x = a[ai + k], r = bOff + k * N;
      for (let j = 0; j < N; j++) s[j] += x * b[r + j];
    }
    for (let j = 0; j < N; j++) out[o + j] = s[j];
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
      store2x4(out, outOff + i * N + j, N, acc, s00, s01, s02, s03, s10, s11, s12, s13);
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

// Argument lists of the kernels: see matmul.wat (byte addresses, leading dims in elements, init = overwrite).
type Kernel = (...args: number[]) => void;
interface WasmExports {
  nt: Kernel; // (out, ldo, a, lda, b, ldb, m, n, k, init)
  nn: Kernel; // (out, ldo, a, lda, b, bk, bp, m, np, k, init)
  nnv: Kernel; // (out, ldo, a, lda, b, ldb, m, n, k, init)
  pack_nn(dst: number, src: number, k: number, n: number, np: number): void;
  sum(ptr: number, bytes: number): number;
}

/** The compiled kernel module instantiated on `memory` (used by bandwidth.ts with a memory of its own). */
export function instantiateFastWasm(memory: WebAssembly.Memory): WasmExports {
  const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  const inst = new WebAssembly.Instance(wasmModule(shared), { env: { mem: memory } });
  return inst.exports as unknown as WasmExports;
}

const moduleCache: { plain?: WebAssembly.Module; shared?: WebAssembly.Module } = {};
/** The compiled kernel module, for a plain or a shared memory (bandwidth.ts hands it to its own workers). */
export function wasmModule(shared: boolean): WebAssembly.Module {
  const key = shared ? 'shared' : 'plain';
  let mod = moduleCache[key];
  if (!mod) {
    // atob rather than Buffer so the same code runs in browsers
    const bin = atob(shared ? MATMUL_WASM_SHARED_BASE64 : MATMUL_WASM_BASE64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    mod = moduleCache[key] = new WebAssembly.Module(bytes);
  }
  return mod;
}

// The kernels' memory and a first-fit heap over it, holding resident arrays (`allocF32`) and the scratch
// that non-resident operands are copied into. The memory is shared when the runtime allows it (Node does;
// browsers only when cross-origin isolated), because only a shared memory grows without detaching the
// arrays that view it; with a plain one, `allocF32` returns ordinary arrays and every operand is copied.
interface WasmState {
  mem: WebAssembly.Memory;
  k: WasmExports;
  shared: boolean;
  f32: Float32Array; // views of the whole memory, re-made after each grow
  i32: Int32Array;
  buffers: WeakSet<ArrayBufferLike>; // every buffer object the memory has had: identifies resident views
  top: number; // end of the heap in bytes
  free: { ptr: number; bytes: number }[]; // sorted by ptr, coalesced
  used: Map<number, number>; // ptr -> bytes of live blocks
  scratch: { ptr: number; bytes: number };
}

let wasmState: WasmState | null | undefined;
const PAGE = 65536;
const MAX_PAGES = 65536; // 4 GiB, the wasm32 limit (must match the shared build in scripts/build-wasm.mjs)
// Every heap block gets this many bytes past its end: kernels read whole tiles past row ends (<= 32 bytes).
const SLACK = 64;
// addresses may pass 2^31 (memory up to 4 GiB): no 32-bit bit tricks on them
const align64 = (x: number) => Math.ceil(x / 64) * 64;

/** True when the WebAssembly SIMD kernels compiled in this runtime (they need SIMD support). */
export function wasmAvailable(): boolean {
  if (wasmState === undefined) wasmState = initWasm();
  return wasmState !== null;
}

function initWasm(): WasmState | null {
  for (const shared of [true, false]) {
    try {
      const mem = shared
        ? new WebAssembly.Memory({ initial: 1, maximum: MAX_PAGES, shared: true })
        : new WebAssembly.Memory({ initial: 1 });
      const k = instantiateFastWasm(mem);
      const buffers = new WeakSet<ArrayBufferLike>([mem.buffer]);
      // the heap starts at 64 so that no block has address 0
      return { mem, k, shared, f32: new Float32Array(mem.buffer), i32: new Int32Array(mem.buffer), buffers,
        top: 64, free: [], used: new Map(),
        scratch: { ptr: 0, bytes: 0 } };
    } catch {
      // no shared memory here: try a plain one; no SIMD at all: every shape takes the JS path
    }
  }
  return null;
}

/** Allocates `bytes` (+ SLACK) in the heap; returns the address, or -1 if the memory cannot grow enough. */
function heapAlloc(st: WasmState, bytes: number): number {
  const size = align64(bytes + SLACK);
  for (let i = 0; i < st.free.length; i++) {
    const f = st.free[i];
    if (f.bytes < size) continue;
    const ptr = f.ptr;
    if (f.bytes === size) st.free.splice(i, 1);
    else { f.ptr += size; f.bytes -= size; }
    st.used.set(ptr, size);
    return ptr;
  }
  const ptr = st.top;
  const end = ptr + size;
  const have = st.mem.buffer.byteLength;
  if (end > have) {
    const pages = Math.ceil((end - have) / PAGE);
    if (have / PAGE + pages > MAX_PAGES) return -1;
    try { st.mem.grow(pages); } catch { return -1; } // out of memory, or past a browser's limit
    // a plain memory detaches its old buffer on grow; a shared one keeps it. Either way re-make the view.
    st.buffers.add(st.mem.buffer);
    st.f32 = new Float32Array(st.mem.buffer);
    st.i32 = new Int32Array(st.mem.buffer);
  }
  st.top = end;
  st.used.set(ptr, size);
  return ptr;
}

function heapFree(st: WasmState, ptr: number): void {
  const size = st.used.get(ptr);
  if (size === undefined) return;
  st.used.delete(ptr);
  let i = 0;
  while (i < st.free.length && st.free[i].ptr < ptr) i++;
  st.free.splice(i, 0, { ptr, bytes: size });
  // coalesce with the next block, then the previous one
  const next = st.free[i + 1];
  if (next && ptr + size === next.ptr) { st.free[i].bytes += next.bytes; st.free.splice(i + 1, 1); }
  const prev = st.free[i - 1];
  if (prev && prev.ptr + prev.bytes === ptr) { prev.bytes += st.free[i].bytes; st.free.splice(i, 1); i--; }
  // a free block at the top just lowers the top
  const last = st.free[st.free.length - 1];
  if (last && last.ptr + last.bytes === st.top) { st.top = last.ptr; st.free.pop(); }
}

/** The scratch block, grown to at least `bytes`; -1 if the memory cannot hold it. */
function scratch(st: WasmState, bytes: number): number {
  if (st.scratch.bytes >= bytes) return st.scratch.ptr;
  if (st.scratch.bytes > 0) heapFree(st, st.scratch.ptr);
  // round up so that a slowly growing shape does not reallocate on every call
  const want = Math.max(bytes, PAGE, Math.ceil(bytes / PAGE) * PAGE);
  const ptr = heapAlloc(st, want);
  st.scratch = ptr < 0 ? { ptr: 0, bytes: 0 } : { ptr, bytes: want };
  return ptr;
}

/**
 * A zeroed Float32Array of `n` floats inside the WASM kernels' memory: `matmulF32` reads such arrays (and
 * their subarrays) in place instead of copying them. Allocate decode weights here: copying the N*K
 * weights of a matrix-vector product into the kernels' memory costs more than the product itself.
 * Returns an ordinary array when the memory cannot be shared (no WASM, or a browser page that is not
 * cross-origin isolated). The array lives until `freeF32`; do not use it after that.
 *
 * @example
 * const W = allocF32(V * C); W.set(weights);      // once, at load
 * matmulF32(logits, x, W, 1, V, C, true);         // per token: W is not copied
 */
export function allocF32(n: number): Float32Array {
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`allocF32: n must be an integer >= 0, found ${n}`);
  if (!wasmAvailable() || !wasmState!.shared) return new Float32Array(n);
  const st = wasmState!;
  const ptr = heapAlloc(st, 4 * n);
  if (ptr < 0) return new Float32Array(n); // memory full: still correct, only copied per call
  const x = new Float32Array(st.mem.buffer, ptr, n);
  x.fill(0); // the block may hold an earlier array's data
  return x;
}

/** Releases an array from `allocF32` (ordinary arrays are ignored). Throws for a part of one. */
export function freeF32(x: Float32Array): void {
  if (!isResident(x)) return;
  const st = wasmState!;
  if (!st.used.has(x.byteOffset) || x.byteOffset === st.scratch.ptr) {
    throw new UsageError('freeF32: this array is not one that allocF32 returned (a subarray, or freed already)',
      'pass the array allocF32 returned, once');
  }
  heapFree(st, x.byteOffset);
}

/** True when `x` lives in the WASM kernels' memory (from `allocF32`), so matmulF32 reads it in place. */
export function isResident(x: Float32Array): boolean {
  return !!wasmState && wasmState.buffers.has(x.buffer);
}

// Blocking of the WASM driver: at most W_MC rows of a per kernel call, and K cut into W_KC slices (partial
// sums go through out) when the a block would not fit in L2 whole, so each b tile is reused from L1
// over an a block read from L2. For decode the a block is tiny and K is never cut.
const W_MC = 64;
const W_KC = 512;
const L2_A_BYTES = 256 * 1024;
// no-transB with at most this many rows uses row updates (`nnv`) on column chunks of NNV_COLS (out rows and
// 4 b segments stay in L1/L2); more rows use register tiles (`nn`), on b packed into 8-column panels from
// PACK_MIN_M rows (contiguous reads, no 4K aliasing; packing costs a pass over b, repaid by many rows).
const NNV_MAX_M = 2;
const NNV_COLS = 4096;
const PACK_MIN_M = 16;

/** Runs the product in WASM; false (nothing written) if the memory cannot hold the scratch it needs. */
function wasmMatmul(out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transB: boolean, aOff: number, bOff: number, outOff: number, accumulate: boolean): boolean {
  if (M === 0 || N === 0) return true;
  if (K === 0) { if (!accumulate) out.fill(0, outOff, outOff + M * N); return true; }
  const st = wasmState!;
  // out goes through a padded scratch region (kernels store whole tiles); resident a and b are read in place
  const ldo = transB ? (N + 3) & ~3 : (N + 7) & ~7;
  const np = ldo >> 3;
  const pack = !transB && M > NNV_MAX_M && M >= PACK_MIN_M;
  const aIn = isResident(a), bIn = isResident(b);
  const bBytes = bIn ? 0 : align64(4 * K * N + SLACK);
  const pBytes = pack ? align64(32 * np * K + SLACK) : 0;
  // split M so that scratch stays under WASM_MAX_BYTES (b is copied or packed once, not per chunk)
  const rowBytes = 4 * ((aIn ? 0 : K) + ldo);
  const rows = Math.max(1, Math.min(M, Math.floor((WASM_MAX_BYTES - bBytes - pBytes) / rowBytes)));
  const aBytes = aIn ? 0 : align64(4 * rows * K + SLACK);
  const oBytes = align64(4 * rows * ldo + SLACK);
  const base = scratch(st, bBytes + pBytes + aBytes + oBytes);
  if (base < 0) return false;
  // NOTE: st.f32, not a copy of it: scratch() and helper command lists may grow the memory (new view)
  const P = base + bBytes, O = P + pBytes + aBytes;
  let B = base;
  if (bIn) B = b.byteOffset + 4 * bOff;
  else st.f32.set(b.subarray(bOff, bOff + K * N), B / 4);
  if (pack) st.k.pack_nn(P, B, K, N, np);
  const g: Geometry = { transB, K, N, ldo, B, P: pack ? P : -1, O, init: accumulate ? 0 : 1 };

  for (let r0 = 0; r0 < M; r0 += rows) {
    const m = Math.min(rows, M - r0);
    let A = P + pBytes;
    if (aIn) A = a.byteOffset + 4 * (aOff + r0 * K);
    else st.f32.set(a.subarray(aOff + r0 * K, aOff + (r0 + m) * K), A / 4);
    if (accumulate) copyRows(st.f32, O / 4, ldo, out, outOff + r0 * N, N, m, true);
    runSplit(st, g, A, m);
    copyRows(st.f32, O / 4, ldo, out, outOff + r0 * N, N, m, false);
  }
  return true;
}

// Where one product's operands sit in the kernels' memory (byte addresses), shared by its column parts.
interface Geometry {
  transB: boolean; K: number; N: number;
  ldo: number; // padded row length of out
  B: number; // b[K,N] or b[N,K]
  P: number; // b packed into 8-column panels, or -1
  O: number; // out
  init: number; // 1: overwrite out, 0: add to it
}

// A kernel call is CMD_INTS int32s: the kernel id, then its arguments. The main thread runs its own list;
// a helper thread reads its list from the kernels' memory (see WORKER_SOURCE).
const CMD_INTS = 12;
const K_NT = 0, K_NN = 1, K_NNV = 2;

/** Appends to cmds (from index n) the calls computing out columns [c0, c1) of m rows; returns the new n. */
function emitCols(cmds: Int32Array, n: number, g: Geometry, A: number, m: number, c0: number, c1: number): number {
  const { K, N, ldo } = g;
  const put = (id: number, ...args: number[]) => {
    cmds[n * CMD_INTS] = id;
    for (let i = 0; i < args.length; i++) cmds[n * CMD_INTS + 1 + i] = args[i];
    n++;
  };
  if (!g.transB && m <= NNV_MAX_M) {
    for (let c = c0; c < c1; c += NNV_COLS) {
      put(K_NNV, g.O + 4 * c, ldo, A, K, g.B + 4 * c, N, m, Math.min(NNV_COLS, c1 - c), K, g.init);
    }
    return n;
  }
  for (let i0 = 0; i0 < m; i0 += W_MC) {
    const mc = Math.min(W_MC, m - i0);
    const KC = 4 * mc * K <= L2_A_BYTES ? K : W_KC;
    for (let k0 = 0; k0 < K; k0 += KC) {
      const kc = Math.min(KC, K - k0);
      const init = k0 === 0 ? g.init : 0;
      const o = g.O + 4 * (i0 * ldo + c0), ap = A + 4 * (i0 * K + k0);
      if (g.transB) put(K_NT, o, ldo, ap, K, g.B + 4 * (c0 * K + k0), K, mc, c1 - c0, kc, init);
      else if (g.P >= 0) put(K_NN, o, ldo, ap, K, g.P + 32 * (c0 * K / 8 + k0), 32, 32 * K, mc, (c1 - c0 + 7) >> 3, kc, init);
      else put(K_NN, o, ldo, ap, K, g.B + 4 * (k0 * N + c0), 4 * N, 32, mc, (c1 - c0 + 7) >> 3, kc, init);
    }
  }
  return n;
}

/** Upper bound on the calls emitCols makes for a part. */
function maxCmds(g: Geometry, m: number, cols: number): number {
  if (!g.transB && m <= NNV_MAX_M) return Math.ceil(cols / NNV_COLS) + 1;
  return Math.ceil(m / W_MC) * Math.ceil(g.K / Math.min(g.K, W_KC));
}

function runCmds(k: WasmExports, c: Int32Array, n: number): void {
  for (let i = 0, p = 0; i < n; i++, p += CMD_INTS) {
    const id = c[p];
    const f = id === K_NT ? k.nt : id === K_NN ? k.nn : k.nnv; // extra arguments are ignored
    f(c[p + 1], c[p + 2], c[p + 3], c[p + 4], c[p + 5], c[p + 6], c[p + 7], c[p + 8], c[p + 9], c[p + 10], c[p + 11]);
  }
}

let mainCmds = new Int32Array(64 * CMD_INTS);

/** Computes all N columns of m rows: the main thread takes the first part, each live helper one more. */
function runSplit(st: WasmState, g: Geometry, A: number, m: number): void {
  const unit = g.transB ? 4 : 8; // part boundaries on whole tiles, so no part writes padding into another
  const parts = m * g.N * g.K >= PAR_MIN_MACS ? Math.max(1, Math.min(1 + helpers.length, Math.floor(g.N / (4 * unit)))) : 1;
  const cut = (p: number) => (p >= parts ? g.N : Math.round((g.N * p) / parts / unit) * unit);
  const seqs: number[] = [];
  for (let p = 1; p < parts; p++) seqs.push(postToHelper(st, helpers[p - 1], g, A, m, cut(p), cut(p + 1)));
  const need = maxCmds(g, m, cut(1)) * CMD_INTS;
  if (mainCmds.length < need) mainCmds = new Int32Array(need);
  runCmds(st.k, mainCmds, emitCols(mainCmds, 0, g, A, m, 0, cut(1)));
  for (let p = 1; p < parts; p++) waitForHelper(st, helpers[p - 1], seqs[p - 1]);
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

// ---------------------------------------------------------------------------------------------------------
// Helper threads (opt-in: `startMatmulThreads`). Each helper is a worker_thread running the same module on
// the same shared memory; it sleeps in Atomics.wait until the main thread posts a list of kernel calls
// (a column range of the product), runs them and signals back. matmulF32 stays synchronous: the main
// thread computes its own columns, then Atomics.waits for the helpers. Helpers are unref'd: they never
// keep the process alive.

// Below this many multiply-adds (~100 us on one core) a split is not worth waking a helper, which took
// 50-100 us here. NOTE: spinning instead of sleeping was tried and made things far worse as soon as
// another process wanted the same core; helpers sleep in Atomics.wait.
const PAR_MIN_MACS = 1 << 21;
// A helper that has not answered after this long is taken for dead (a hang is worse than an error).
const HELPER_TIMEOUT_MS = 10 * 60 * 1000;

// Control block of a helper, int32 slots from its address.
const C_SEQ = 0, C_DONE = 1, C_COUNT = 2, C_CMDS = 3, C_ERR = 4;

interface Helper {
  worker: { terminate(): Promise<number> };
  ctl: number; // byte address of the control block
  cmds: number; // byte address of the command area, and its capacity in calls
  cap: number;
  seq: number;
}

let helpers: Helper[] = [];

// Plain JS run by `new Worker(..., { eval: true })`: no loader or file needed, the same whichever loader runs the sources.
const WORKER_SOURCE = `
const { workerData, parentPort } = require('node:worker_threads');
const { module, memory, ctl } = workerData;
const k = new WebAssembly.Instance(module, { env: { mem: memory } }).exports;
const c = ctl / 4;
let I = new Int32Array(memory.buffer);
parentPort.postMessage('ready');
let seen = 0;
for (;;) {
  Atomics.wait(I, c + ${C_SEQ}, seen);
  const seq = Atomics.load(I, c + ${C_SEQ});
  if (seq === seen) continue;
  if (seq < 0) break;
  seen = seq;
  I = new Int32Array(memory.buffer); // the main thread may have grown the memory
  let err = 0;
  try {
    const n = I[c + ${C_COUNT}];
    for (let i = 0, p = I[c + ${C_CMDS}] >>> 2; i < n; i++, p += ${CMD_INTS}) {
      const id = I[p];
      const f = id === ${K_NT} ? k.nt : id === ${K_NN} ? k.nn : k.nnv;
      f(I[p + 1], I[p + 2], I[p + 3], I[p + 4], I[p + 5], I[p + 6], I[p + 7], I[p + 8], I[p + 9], I[p + 10], I[p + 11]);
    }
  } catch (e) {
    err = 1;
  }
  Atomics.store(I, c + ${C_ERR}, err);
  Atomics.store(I, c + ${C_DONE}, seq);
  Atomics.notify(I, c + ${C_DONE});
}
`;

function postToHelper(st: WasmState, h: Helper, g: Geometry, A: number, m: number, c0: number, c1: number): number {
  const need = maxCmds(g, m, c1 - c0);
  if (need > h.cap) {
    const ptr = heapAlloc(st, need * CMD_INTS * 4);
    if (ptr < 0) throw new Error('matmulF32: the WASM memory cannot hold a helper thread\'s command list');
    heapFree(st, h.cmds);
    h.cmds = ptr;
    h.cap = need;
  }
  const cmds = st.i32.subarray(h.cmds / 4, (h.cmds / 4) + need * CMD_INTS);
  const n = emitCols(cmds, 0, g, A, m, c0, c1);
  const c = h.ctl / 4;
  st.i32[c + C_COUNT] = n;
  st.i32[c + C_CMDS] = h.cmds;
  h.seq++;
  Atomics.store(st.i32, c + C_SEQ, h.seq); // publishes the writes above to the helper
  Atomics.notify(st.i32, c + C_SEQ);
  return h.seq;
}

function waitForHelper(st: WasmState, h: Helper, seq: number): void {
  const c = h.ctl / 4;
  const t0 = Date.now();
  while (Atomics.load(st.i32, c + C_DONE) !== seq) {
    Atomics.wait(st.i32, c + C_DONE, seq - 1, 1000);
    if (Date.now() - t0 > HELPER_TIMEOUT_MS) {
      helpers = helpers.filter((x) => x !== h); // never post to it again
      throw new Error(`matmulF32: a helper thread did not finish within ${HELPER_TIMEOUT_MS / 1000} s`);
    }
  }
  if (st.i32[c + C_ERR]) throw new Error('matmulF32: a WASM kernel failed in a helper thread');
}

/**
 * Starts helper threads so that large products (>= 2^20 multiply-adds) are split by columns over
 * `threads` threads in all (default: the number of cores, at most 4). Resolves to the number of threads
 * now in use: 1 where worker_threads or shared WASM memory are missing (browsers, no SIMD). Calling it
 * again resizes the pool. matmulF32 stays synchronous either way.
 *
 * @example
 * await startMatmulThreads();      // once, e.g. when the CPU backend is created
 * matmulF32(out, x, W, T, F, C, true); // now runs on every core for big shapes
 */
export async function startMatmulThreads(threads?: number): Promise<number> {
  if (!wasmAvailable() || !wasmState!.shared) return 1;
  let os: typeof import('node:os'), wt: typeof import('node:worker_threads');
  try {
    [os, wt] = await Promise.all([import('node:os'), import('node:worker_threads')]);
  } catch {
    return 1; // not Node
  }
  const want = Math.max(1, Math.floor(threads ?? Math.min(4, os.availableParallelism?.() ?? os.cpus().length)));
  while (helpers.length > want - 1) await stopHelper(helpers.pop()!);
  const st = wasmState!;
  while (helpers.length < want - 1) {
    const ctl = heapAlloc(st, 64);
    if (ctl < 0) break;
    st.i32.fill(0, ctl / 4, (ctl / 4) + 16);
    const worker = new wt.Worker(WORKER_SOURCE, { eval: true, workerData: { module: wasmModule(true), memory: st.mem, ctl } });
    worker.unref();
    try {
      await new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
        worker.once('exit', () => reject(new Error('helper thread exited during start-up')));
      });
    } catch {
      heapFree(st, ctl);
      await worker.terminate();
      break; // run with the helpers that did start
    }
    const h: Helper = { worker, ctl, cmds: 0, cap: 0, seq: 0 };
    // a helper that dies later (it should not: kernel errors are caught and reported) is dropped
    worker.on('error', () => undefined);
    worker.once('exit', () => { helpers = helpers.filter((x) => x !== h); });
    helpers.push(h);
  }
  return 1 + helpers.length;
}

/** Stops all helper threads (matmulF32 then runs on the calling thread only). */
export async function stopMatmulThreads(): Promise<void> {
  while (helpers.length) await stopHelper(helpers.pop()!);
}

/** Number of threads large products are split over (1 + running helpers). */
export function matmulThreads(): number {
  return 1 + helpers.length;
}

async function stopHelper(h: Helper): Promise<void> {
  const st = wasmState!;
  Atomics.store(st.i32, (h.ctl / 4) + C_SEQ, -1);
  Atomics.notify(st.i32, (h.ctl / 4) + C_SEQ);
  await h.worker.terminate();
  heapFree(st, h.ctl);
  if (h.cap) heapFree(st, h.cmds);
}

/** Write (or add) a 2×4 tile of sums at out[o..], rows N apart. Small enough for V8 to inline. */
function store2x4(out: Float32Array, o: number, N: number, acc: boolean,
  s00: number, s01: number, s02: number, s03: number, s10: number, s11: number, s12: number, s13: number): void {
  if (acc) {
    out[o] += s00; out[o + 1] += s01; out[o + 2] += s02; out[o + 3] += s03;
    out[o + N] += s10; out[o + N + 1] += s11; out[o + N + 2] += s12; out[o + N + 3] += s13;
  } else {
    out[o] = s00; out[o + 1] = s01; out[o + 2] = s02; out[o + 3] = s03;
    out[o + N] = s10; out[o + N + 1] = s11; out[o + N + 2] = s12; out[o + N + 3] = s13;
  }
}
