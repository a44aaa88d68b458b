// Fast CPU kernels that replace reference kernels of the same op: blocked/WASM matmul, attention as
// two matmuls per kv head over the head-major cache, typed elementwise and norm loops. Each one is
// tested against the reference in test/ops.test.ts; the reference stays the definition.

import { CPU_KERNELS, composeFusedKvWrite, composeFusedLinear, composeFusedQkv, type CpuKernel, type CpuKernelTable, type HostTensor } from '../kernels.ts';
import { allocF32, freeF32, matmulF32 } from './matmul.ts';

/** Resident scratch buffers for attention, grown on demand and kept. */
const bufs: Record<'q' | 'p' | 'o' | 't' | 'g' | 'd' | 'r', Float32Array> = {
  q: new Float32Array(0), p: new Float32Array(0), o: new Float32Array(0), t: new Float32Array(0), g: new Float32Array(0), d: new Float32Array(0), r: new Float32Array(0),
};
function buf(name: keyof typeof bufs, n: number): Float32Array {
  if (bufs[name].length < n) {
    freeF32(bufs[name]);
    bufs[name] = allocF32(Math.max(n, 2 * bufs[name].length));
  }
  return bufs[name];
}

/** Scores (G·T, Sv) of stacked query rows → softmax probabilities; row (g, t) sees keys 0 ..= p0 + t. */
function causalSoftmaxRows(ps: Float32Array, G: number, T: number, Sv: number, p0: number, scale: number) {
  for (let g = 0; g < G; g++) for (let t = 0; t < T; t++) {
    const o = (g * T + t) * Sv, visible = p0 + t + 1;
    let mx = -Infinity;
    for (let s = 0; s < visible; s++) { const x = ps[o + s] * scale; ps[o + s] = x; if (x > mx) mx = x; }
    let z = 0;
    for (let s = 0; s < visible; s++) { const e = Math.exp(ps[o + s] - mx); ps[o + s] = e; z += e; }
    const inv = 1 / z;
    for (let s = 0; s < visible; s++) ps[o + s] *= inv;
    for (let s = visible; s < Sv; s++) ps[o + s] = 0;
  }
}

/**
 * Attention as two matmuls per (batch row, kv head), reading the head-major cache in place: the G = H/K
 * query heads sharing a kv head are stacked into one (G·T, D) block, scores = Q Kᵀ, masked softmax, P V.
 */
function attentionByMatmul(out: Float32Array | Int32Array, Q: Float32Array, Kd: Float32Array, Vd: Float32Array,
  B: number, T: number, H: number, K: number, D: number, S: number, pos0: number[], scale: number) {
  const G = H / K;
  for (let b = 0; b < B; b++) {
    const Sv = pos0[b] + T; // keys any query of this row can see
    const qs = buf('q', G * T * D), ps = buf('p', G * T * Sv), os = buf('o', G * T * D);
    for (let kh = 0; kh < K; kh++) {
      const kvOff = (b * K + kh) * S * D;
      for (let g = 0; g < G; g++) for (let t = 0; t < T; t++) {
        const src = ((b * T + t) * H + kh * G + g) * D;
        qs.set(Q.subarray(src, src + D), (g * T + t) * D);
      }
      matmulF32(ps, qs, Kd, G * T, Sv, D, true, 0, kvOff, 0);
      causalSoftmaxRows(ps, G, T, Sv, pos0[b], scale);
      matmulF32(os, ps, Vd, G * T, D, Sv, false, 0, kvOff, 0);
      for (let g = 0; g < G; g++) for (let t = 0; t < T; t++) {
        const dst = ((b * T + t) * H + kh * G + g) * D;
        out.set(os.subarray((g * T + t) * D, (g * T + t + 1) * D), dst);
      }
    }
  }
}

type Out = Float32Array | Int32Array;

/**
 * The gradient of attention with respect to q, k or v, per (batch row, kv head) as in attentionByMatmul:
 * P = softmax(scale·Q Kᵀ) over the stacked (G·T, D) queries; dV = Pᵀ dO; dS = P ⊙ (dO Vᵀ − rowsum(·));
 * dQ = scale·dS K; dK = scale·dSᵀ Q. Stacking the G heads of a kv head sums their dK/dV contributions.
 */
function attentionGradByMatmul(out: Float32Array, Q: Float32Array, Kd: Float32Array, Vd: Float32Array, G_: Float32Array,
  B: number, T: number, H: number, K: number, D: number, S: number, pos0: number[], scale: number, wrt: 'q' | 'k' | 'v') {
  const G = H / K;
  out.fill(0);
  for (let b = 0; b < B; b++) {
    const Sv = pos0[b] + T, R = G * T;
    const qs = buf('q', R * D), ps = buf('p', R * Sv), gs = buf('g', R * D);
    for (let kh = 0; kh < K; kh++) {
      const kvOff = (b * K + kh) * S * D;
      for (let g = 0; g < G; g++) for (let t = 0; t < T; t++) {
        const src = ((b * T + t) * H + kh * G + g) * D;
        qs.set(Q.subarray(src, src + D), (g * T + t) * D);
        gs.set(G_.subarray(src, src + D), (g * T + t) * D);
      }
      matmulF32(ps, qs, Kd, R, Sv, D, true, 0, kvOff, 0);
      causalSoftmaxRows(ps, G, T, Sv, pos0[b], scale);
      if (wrt === 'v') {
        const pt = buf('t', Sv * R), dv = buf('d', Sv * D);
        for (let r = 0; r < R; r++) for (let s = 0; s < Sv; s++) pt[s * R + r] = ps[r * Sv + s];
        matmulF32(dv, pt, gs, Sv, D, R, false, 0, 0, 0);
        out.set(dv.subarray(0, Sv * D), kvOff);
        continue;
      }
      const dp = buf('d', R * Sv);
      matmulF32(dp, gs, Vd, R, Sv, D, true, 0, kvOff, 0); // dO Vᵀ
      for (let r = 0; r < R; r++) {
        const o = r * Sv;
        let dot = 0;
        for (let s = 0; s < Sv; s++) dot += dp[o + s] * ps[o + s];
        for (let s = 0; s < Sv; s++) dp[o + s] = ps[o + s] * (dp[o + s] - dot) * scale;
      }
      if (wrt === 'q') {
        const dq = buf('o', R * D);
        matmulF32(dq, dp, Kd, R, D, Sv, false, 0, kvOff, 0);
        for (let g = 0; g < G; g++) for (let t = 0; t < T; t++) {
          const dst = ((b * T + t) * H + kh * G + g) * D;
          out.set(dq.subarray((g * T + t) * D, (g * T + t + 1) * D), dst);
        }
      } else {
        const dt = buf('t', Sv * R), dk = buf('r', Sv * D);
        for (let r = 0; r < R; r++) for (let s = 0; s < Sv; s++) dt[s * R + r] = dp[r * Sv + s];
        matmulF32(dk, dt, qs, Sv, D, R, false, 0, 0, 0);
        out.set(dk.subarray(0, Sv * D), kvOff);
      }
    }
  }
}

/** (batches, R, C) → (batches, C, R) into the resident scratch buffer 't'. */
function transposeLast2(x: Float32Array, batches: number, R: number, C: number): Float32Array {
  const t = buf('t', batches * R * C);
  for (let b = 0; b < batches; b++) {
    const o = b * R * C;
    for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) t[o + c * R + r] = x[o + r * C + c];
  }
  return t;
}

/** Elementwise binary op, fast when b equals a's shape or repeats along a's last dims; else the reference. */
type BinaryKernel = (out: Out, xs: HostTensor[], attrs: Record<string, never>, outShape: readonly number[]) => void;

function binary(f: (x: number, y: number) => number, ref: BinaryKernel): BinaryKernel {
  return (out, xs, attrs, outShape) => {
    const A = xs[0].data as Float32Array, Bv = xs[1].data as Float32Array, O = out as Float32Array;
    const n = O.length, m = Bv.length;
    if (A.length !== n || n % m !== 0 || !isTrailing(xs[1].shape, xs[0].shape)) return ref(out, xs, attrs, outShape);
    if (m === n) for (let i = 0; i < n; i++) O[i] = f(A[i], Bv[i]);
    else for (let r = 0; r < n; r += m) for (let j = 0; j < m; j++) O[r + j] = f(A[r + j], Bv[j]);
  };
}

/** b's shape (leading 1s ignored) equals the trailing dims of a's. */
function isTrailing(b: readonly number[], a: readonly number[]): boolean {
  let i = 0;
  while (i < b.length - 1 && b[i] === 1) i++;
  const bb = b.slice(i);
  if (bb.length > a.length) return false;
  return bb.every((d, j) => d === a[a.length - bb.length + j]);
}

function unary(f: (x: number) => number): (out: Out, xs: HostTensor[]) => void {
  return (out, [x]) => {
    const X = x.data as Float32Array, O = out as Float32Array;
    for (let i = 0; i < O.length; i++) O[i] = f(X[i]);
  };
}

export const FAST_KERNELS: Partial<CpuKernelTable> = {
  add: binary((x, y) => x + y, CPU_KERNELS.add),
  sub: binary((x, y) => x - y, CPU_KERNELS.sub),
  mul: binary((x, y) => x * y, CPU_KERNELS.mul),
  div: binary((x, y) => x / y, CPU_KERNELS.div),
  silu: unary((x) => x / (1 + Math.exp(-x))),
  rmsnorm: (out, [x, w], { eps }) => {
    const X = x.data as Float32Array, W = w.data as Float32Array, O = out as Float32Array;
    const C = W.length;
    for (let o = 0; o < X.length; o += C) {
      let ms = 0;
      for (let c = 0; c < C; c++) ms += X[o + c] * X[o + c];
      const inv = 1 / Math.sqrt(ms / C + eps);
      for (let c = 0; c < C; c++) O[o + c] = W[c] * Math.fround(X[o + c] * inv);
    }
  },
  layernorm: (out, [x, w, b], { eps }) => {
    const X = x.data as Float32Array, W = w.data as Float32Array, O = out as Float32Array;
    const Bb = b ? (b.data as Float32Array) : undefined;
    const C = W.length;
    for (let o = 0; o < X.length; o += C) {
      let mean = 0;
      for (let c = 0; c < C; c++) mean += X[o + c];
      mean /= C;
      let v = 0;
      for (let c = 0; c < C; c++) { const d = X[o + c] - mean; v += d * d; }
      const inv = 1 / Math.sqrt(v / C + eps);
      for (let c = 0; c < C; c++) O[o + c] = (X[o + c] - mean) * inv * W[c] + (Bb ? Bb[c] : 0);
    }
  },
  gather_rows: (out, [table, idx]) => {
    const [N, C] = table.shape;
    const Tb = table.data as Float32Array, I = idx.data as Int32Array;
    for (let i = 0; i < I.length; i++) {
      const r = I[i];
      if (!(r >= 0 && r < N)) throw new RangeError(`gather_rows: index ${r} outside 0..${N - 1}`);
      out.set(Tb.subarray(r * C, (r + 1) * C), i * C);
    }
  },
  matmul: (out, [a, b], { transB, transA }, outShape) => {
    const M = outShape[outShape.length - 2];
    const N = outShape[outShape.length - 1];
    const K = a.shape[a.shape.length - (transA ? 2 : 1)];
    const batches = out.length / (M * N);
    const bBatches = b.data.length / (K * N);
    // NOTE: transA (weight gradients) transposes a into a scratch buffer once, then runs the fast path.
    const A = transA ? transposeLast2(a.data as Float32Array, batches, K, M) : a.data as Float32Array;
    const Bm = b.data as Float32Array, O = out as Float32Array;
    if (bBatches === 1) {
      // Shared weights: fold the batch into M for one big, better-blocked product.
      matmulF32(O, A, Bm, batches * M, N, K, transB, 0, 0, 0);
      return;
    }
    for (let i = 0; i < batches; i++) matmulF32(O, A, Bm, M, N, K, transB, i * M * K, (i % bBatches) * K * N, i * M * N);
  },

  sum_to: (out, xs, attrs, outShape) => {
    // Fast paths: everything to a scalar, or leading axes away (bias and norm-weight gradients).
    const X = xs[0].data as Float32Array, O = out as Float32Array, n = O.length;
    const trailing = outShape.length <= xs[0].shape.length && outShape.every((d, i) => d === xs[0].shape[xs[0].shape.length - outShape.length + i]);
    if (n === 1) {
      let acc = 0;
      for (let i = 0; i < X.length; i++) acc += X[i];
      O[0] = acc;
    } else if (trailing) {
      const acc = new Float64Array(n);
      for (let o = 0; o < X.length; o += n) for (let j = 0; j < n; j++) acc[j] += X[o + j];
      O.set(acc);
    } else CPU_KERNELS.sum_to(out, xs, attrs, outShape);
  },
  attention_grad: (out, [q, k, v, g], { pos0, scale, wrt }) => {
    const [B, T, H, D] = q.shape;
    const [, K, S] = k.shape;
    attentionGradByMatmul(out as Float32Array, q.data as Float32Array, k.data as Float32Array, v.data as Float32Array, g.data as Float32Array, B, T, H, K, D, S, pos0, scale, wrt);
  },
  cross_entropy_grad: (out, [logits, targets, g]) => {
    const V = logits.shape[logits.shape.length - 1];
    const L = logits.data as Float32Array, O = out as Float32Array, Y = targets.data as Int32Array, Gd = g.data as Float32Array;
    for (let r = 0; r < Y.length; r++) {
      const o = r * V, y = Y[r];
      if (y < 0) { O.fill(0, o, o + V); continue; }
      let mx = -Infinity;
      for (let c = 0; c < V; c++) if (L[o + c] > mx) mx = L[o + c];
      let z = 0;
      for (let c = 0; c < V; c++) { const e = Math.exp(L[o + c] - mx); O[o + c] = e; z += e; }
      const k = Gd[r] / z;
      for (let c = 0; c < V; c++) O[o + c] *= k;
      O[o + y] -= Gd[r];
    }
  },
  attention: (out, [q, k, v], { pos0, scale }) => {
    const [B, T, H, D] = q.shape;
    const [, K, S] = k.shape;
    attentionByMatmul(out, q.data as Float32Array, k.data as Float32Array, v.data as Float32Array, B, T, H, K, D, S, pos0, scale);
  },
  // The same composition as the reference, over the fast kernels (a fused pass equals the unfused one).
  fused_linear: (out, xs, a, shape) => fusedFast().linear(out, xs, a, shape),
  fused_kv_write: (out, xs, a, shape) => fusedFast().kvWrite(out, xs, a, shape),
  fused_qkv: (out, xs, a, shape) => fusedFast().qkv(out, xs, a, shape),
};

/** The fused kernels composed over the reference table overlaid with the fast one, built once. */
let fused: { linear: CpuKernel<'fused_linear'>; kvWrite: CpuKernel<'fused_kv_write'>; qkv: CpuKernel<'fused_qkv'> } | undefined;
function fusedFast() {
  if (!fused) {
    const table = { ...CPU_KERNELS, ...FAST_KERNELS } as CpuKernelTable;
    fused = { linear: composeFusedLinear(table), kvWrite: composeFusedKvWrite(table), qkv: composeFusedQkv(table) };
  }
  return fused;
}
