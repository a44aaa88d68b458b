// The CPU reference kernels: the definition of every primitive op. Written for clarity — plain
// loops, accumulation in JS doubles — not speed; faster implementations live in fast/ and are
// tested against these. Kernels receive inputs already shape-checked by tensor/shapes.ts.

import { fusedLinearSlots, splitFusedQkv, type OpAttrs, type OpName } from '../../tensor/ops.ts';
import { acceptDraft, drawToken, optionsOfAttrs } from '../../tensor/sampling.ts';

/** A host view of an input tensor. f32 tensors are Float32Array, i32 tensors Int32Array. */
export interface HostTensor {
  data: Float32Array | Int32Array;
  shape: readonly number[];
}

/** A kernel fills `out` (already allocated with the output shape) from its inputs. */
export type CpuKernel<O extends OpName> = (out: Float32Array | Int32Array, xs: HostTensor[], attrs: OpAttrs[O], outShape: readonly number[]) => void;

export type CpuKernelTable = { [O in OpName]: CpuKernel<O> };

const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);
const last = (s: readonly number[]) => s[s.length - 1];

type AttrFree = (out: Float32Array | Int32Array, xs: HostTensor[]) => void;

function binary(f: (a: number, b: number) => number): AttrFree {
  return (out, [a, b]) => {
    const n = out.length;
    if (a.data.length === n && b.data.length === n) {
      for (let i = 0; i < n; i++) out[i] = f(a.data[i], b.data[i]);
      return;
    }
    // General numpy broadcasting: walk the output index and map it to each input's offset.
    const outShape = broadcastShape(a.shape, b.shape);
    const sa = broadcastStrides(a.shape, outShape), sb = broadcastStrides(b.shape, outShape);
    const idx = new Array(outShape.length).fill(0);
    let ia = 0, ib = 0;
    for (let i = 0; i < n; i++) {
      out[i] = f(a.data[ia], b.data[ib]);
      for (let d = outShape.length - 1; d >= 0; d--) {
        idx[d]++; ia += sa[d]; ib += sb[d];
        if (idx[d] < outShape[d]) break;
        ia -= sa[d] * outShape[d]; ib -= sb[d] * outShape[d]; idx[d] = 0;
      }
    }
  };
}

function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  return Array.from({ length: n }, (_, i) => Math.max(a[a.length - n + i] ?? 1, b[b.length - n + i] ?? 1));
}

/** Strides of `shape` laid against `outShape` (0 where the input broadcasts). */
function broadcastStrides(shape: readonly number[], outShape: number[]): number[] {
  const st = new Array(outShape.length).fill(0);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const d = outShape.length - shape.length + i;
    st[d] = shape[i] === 1 ? 0 : acc;
    acc *= shape[i];
  }
  return st;
}

function unary(f: (x: number) => number): AttrFree {
  return (out, [a]) => {
    for (let i = 0; i < out.length; i++) out[i] = f(a.data[i]);
  };
}

/** erf with relative error < 1.2e-7 (Chebyshev fit of erfc, Numerical Recipes 6.2). */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? 1 - r : r - 1;
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

export const geluErfScalar = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
export const geluTanhScalar = (x: number) => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
export const siluScalar = (x: number) => x / (1 + Math.exp(-x));

/** Scaled scores of query (b, t, h) against keys 0..visible-1 into `scores`; returns the kv head and the max. */
function attnScores(q: HostTensor, k: HostTensor, b: number, t: number, h: number, visible: number, scale: number, scores: Float64Array) {
  const [, T, H, D] = q.shape;
  const [, K, S] = k.shape;
  const kh = Math.floor(h / (H / K)); // GQA: H/K query heads share one kv head
  const qo = ((b * T + t) * H + h) * D;
  let mx = -Infinity;
  for (let s = 0; s < visible; s++) {
    const ko = ((b * K + kh) * S + s) * D;
    let dot = 0;
    for (let d = 0; d < D; d++) dot += q.data[qo + d] * k.data[ko + d];
    scores[s] = dot * scale;
    if (scores[s] > mx) mx = scores[s];
  }
  return { kh, mx };
}

/** Softmax probabilities of query (b, t, h) over keys 0..visible-1 into `probs`; returns the kv head. */
function attnRow(q: HostTensor, k: HostTensor, b: number, t: number, h: number, visible: number, scale: number, probs: Float64Array) {
  const { kh, mx } = attnScores(q, k, b, t, h, visible, scale, probs);
  let z = 0;
  for (let s = 0; s < visible; s++) { probs[s] = Math.exp(probs[s] - mx); z += probs[s]; }
  for (let s = 0; s < visible; s++) probs[s] /= z;
  return kh;
}

/** Row-major strides of a shape. */
function stridesOf(shape: readonly number[]): number[] {
  const st = new Array(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) st[i] = st[i + 1] * shape[i + 1];
  return st;
}

/** Calls f(flat index, multi-index) for every element of `shape`, in row-major order. */
function forEachIndex(shape: readonly number[], f: (i: number, idx: number[]) => void): void {
  const n = numel(shape), idx = new Array(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    f(i, idx);
    for (let d = shape.length - 1; d >= 0; d--) { if (++idx[d] < shape[d]) break; idx[d] = 0; }
  }
}

function logSumExp(x: Float32Array | Int32Array, o: number, n: number): number {
  let mx = -Infinity;
  for (let c = 0; c < n; c++) mx = Math.max(mx, x[o + c]);
  let z = 0;
  for (let c = 0; c < n; c++) z += Math.exp(x[o + c] - mx);
  return mx + Math.log(z);
}

const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** Derivative of each activation at x. */
export const ACT_DERIVATIVES: Record<OpAttrs['act_grad']['fn'], (x: number) => number> = {
  silu: (x) => { const s = 1 / (1 + Math.exp(-x)); return s * (1 + x * (1 - s)); },
  relu: (x) => (x > 0 ? 1 : 0),
  gelu_erf: (x) => 0.5 * (1 + erf(x / Math.SQRT2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x),
  gelu_tanh: (x) => {
    const u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x), th = Math.tanh(u);
    return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x);
  },
};

export const CPU_KERNELS: CpuKernelTable = {
  matmul: (out, [a, b], { transB, transA }, outShape) => {
    const M = outShape[outShape.length - 2], K = a.shape[a.shape.length - (transA ? 2 : 1)];
    const N = last(outShape);
    const batches = numel(outShape) / (M * N);
    const bBatches = numel(b.shape) / (K * N); // b may be shared by all batches (broadcast)
    for (let i = 0; i < batches; i++) {
      const ao = i * M * K, bo = (i % bBatches) * K * N, oo = i * M * N;
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          let acc = 0;
          for (let k = 0; k < K; k++) acc += a.data[ao + (transA ? k * M + m : m * K + k)] * b.data[bo + (transB ? n * K + k : k * N + n)];
          out[oo + m * N + n] = acc;
        }
      }
    }
  },
  add: binary((a, b) => a + b),
  sub: binary((a, b) => a - b),
  mul: binary((a, b) => a * b),
  div: binary((a, b) => a / b),
  scale: (out, [a], { s }) => { for (let i = 0; i < out.length; i++) out[i] = a.data[i] * s; },
  silu: unary(siluScalar),
  relu: unary((x) => (x > 0 ? x : 0)),
  gelu_erf: unary(geluErfScalar),
  gelu_tanh: unary(geluTanhScalar),
  softmax: (out, [a]) => {
    const C = last(a.shape);
    for (let r = 0; r < a.data.length / C; r++) {
      const o = r * C;
      let mx = -Infinity;
      for (let c = 0; c < C; c++) mx = Math.max(mx, a.data[o + c]);
      let z = 0;
      for (let c = 0; c < C; c++) z += Math.exp(a.data[o + c] - mx);
      for (let c = 0; c < C; c++) out[o + c] = Math.exp(a.data[o + c] - mx) / z;
    }
  },
  sum: (out, [a]) => {
    const C = last(a.shape);
    for (let r = 0; r < out.length; r++) { let s = 0; for (let c = 0; c < C; c++) s += a.data[r * C + c]; out[r] = s; }
  },
  max: (out, [a]) => {
    const C = last(a.shape);
    for (let r = 0; r < out.length; r++) { let s = -Infinity; for (let c = 0; c < C; c++) s = Math.max(s, a.data[r * C + c]); out[r] = s; }
  },
  layernorm: (out, [x, w, b], { eps }) => {
    const C = last(x.shape);
    for (let r = 0; r < x.data.length / C; r++) {
      const o = r * C;
      let mean = 0;
      for (let c = 0; c < C; c++) mean += x.data[o + c];
      mean /= C;
      let v = 0;
      for (let c = 0; c < C; c++) v += (x.data[o + c] - mean) ** 2;
      const inv = 1 / Math.sqrt(v / C + eps); // biased variance, as torch.nn.LayerNorm
      for (let c = 0; c < C; c++) out[o + c] = (x.data[o + c] - mean) * inv * w.data[c] + (b ? b.data[c] : 0);
    }
  },
  rmsnorm: (out, [x, w], { eps }) => {
    const C = last(x.shape);
    for (let r = 0; r < x.data.length / C; r++) {
      const o = r * C;
      let ms = 0;
      for (let c = 0; c < C; c++) ms += x.data[o + c] ** 2;
      // NOTE: HF Llama rounds the normalised value to f32 before scaling by the weight.
      const inv = 1 / Math.sqrt(ms / C + eps);
      for (let c = 0; c < C; c++) out[o + c] = w.data[c] * Math.fround(x.data[o + c] * inv);
    }
  },
  rope: (out, [x], { pos0, invFreq }) => {
    const [B, T, H, D] = x.shape;
    // Pairs (i, i + R) rotate together (rotate_half); R < D/2 is partial rotary and the rest passes through.
    const R = invFreq.length;
    out.set(x.data);
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) {
      const pos = pos0[b] + t;
      for (let i = 0; i < R; i++) {
        // NOTE: HF computes the angle in f32 (inv_freq f32 × position f32) before cos/sin.
        const ang = Math.fround(Math.fround(invFreq[i]) * pos);
        const cos = Math.fround(Math.cos(ang)), sin = Math.fround(Math.sin(ang));
        for (let h = 0; h < H; h++) {
          const o = ((b * T + t) * H + h) * D;
          const x1 = x.data[o + i], x2 = x.data[o + i + R];
          out[o + i] = x1 * cos - x2 * sin;
          out[o + i + R] = x2 * cos + x1 * sin;
        }
      }
    }
  },
  gather_rows: (out, [table, idx]) => {
    const [N, C] = table.shape;
    for (let i = 0; i < idx.data.length; i++) {
      const r = idx.data[i];
      if (!(r >= 0 && r < N)) throw new RangeError(`gather_rows: index ${r} outside 0..${N - 1}`);
      for (let c = 0; c < C; c++) out[i * C + c] = table.data[r * C + c];
    }
  },
  index_add_rows: (out, [dst, src, idx]) => {
    const [N, C] = dst.shape;
    out.set(dst.data);
    for (let i = 0; i < idx.data.length; i++) {
      const r = idx.data[i];
      if (!(r >= 0 && r < N)) throw new RangeError(`index_add_rows: index ${r} outside 0..${N - 1}`);
      for (let c = 0; c < C; c++) out[r * C + c] += src.data[i * C + c];
    }
  },
  topk: (out, [x], { k }) => {
    const E = last(x.shape);
    for (let r = 0; r < x.data.length / E; r++) {
      const order = Array.from({ length: E }, (_, i) => i);
      order.sort((i, j) => x.data[r * E + j] - x.data[r * E + i] || i - j);
      for (let j = 0; j < k; j++) out[r * k + j] = order[j];
    }
  },
  sample: (out, [x, u], attrs) => {
    const V = last(x.shape), o = optionsOfAttrs(attrs);
    for (let r = 0; r < u.data.length; r++) out[r] = drawToken(x.data, r * V, V, o, u.data[r]);
  },
  accept_draft: (out, [p, q, d, u], attrs) => {
    const V = last(p.shape), o = optionsOfAttrs(attrs);
    for (let r = 0; r < d.data.length; r++) {
      const { token, accepted } = acceptDraft(p.data, q.data, r * V, V, o, d.data[r], u.data[2 * r], u.data[2 * r + 1]);
      out[2 * r] = accepted ? 1 : 0;
      out[2 * r + 1] = token;
    }
  },
  gather: (out, [x, idx]) => {
    const E = last(x.shape), k = last(idx.shape);
    for (let r = 0; r < idx.data.length / k; r++)
      for (let j = 0; j < k; j++) out[r * k + j] = x.data[r * E + idx.data[r * k + j]];
  },
  kv_write: (out, [cache, x], { pos0 }) => {
    // In place: `out` IS the cache's storage (the backend passes it through).
    const [B, K, S, D] = cache.shape;
    const T = x.shape[1];
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let h = 0; h < K; h++) {
      const src = ((b * T + t) * K + h) * D;
      out.set(x.data.subarray(src, src + D), ((b * K + h) * S + pos0[b] + t) * D);
    }
  },
  attention: (out, [q, k, v], { pos0, scale }) => {
    const [B, T, H, D] = q.shape;
    const [, K, S] = k.shape;
    const probs = new Float64Array(S);
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) {
      const visible = pos0[b] + t + 1;
      const kh = attnRow(q, k, b, t, h, visible, scale, probs);
      const oo = ((b * T + t) * H + h) * D;
      for (let d = 0; d < D; d++) {
        let acc = 0;
        for (let s = 0; s < visible; s++) acc += probs[s] * v.data[((b * K + kh) * S + s) * D + d];
        out[oo + d] = acc;
      }
    }
  },
  attention_probs: (out, [q, k], { pos0, scale }) => {
    const [B, T, H] = q.shape;
    const S = k.shape[2];
    const probs = new Float64Array(S);
    out.fill(0);
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let t = 0; t < T; t++) {
      const visible = pos0[b] + t + 1;
      attnRow(q, k, b, t, h, visible, scale, probs);
      const oo = ((b * H + h) * T + t) * S;
      for (let s = 0; s < visible; s++) out[oo + s] = probs[s];
    }
  },
  permute: (out, [x], { perm }, outShape) => {
    const inStrides = stridesOf(x.shape);
    const st = perm.map((p) => inStrides[p]); // input stride of each output axis
    forEachIndex(outShape, (i, idx) => {
      let o = 0;
      for (let d = 0; d < idx.length; d++) o += idx[d] * st[d];
      out[i] = x.data[o];
    });
  },
  sum_to: (out, [x], { shape }) => {
    out.fill(0);
    const st = broadcastStrides(shape, [...x.shape]);
    forEachIndex(x.shape, (i, idx) => {
      let o = 0;
      for (let d = 0; d < idx.length; d++) o += idx[d] * st[d];
      out[o] += x.data[i];
    });
  },
  slice: (out, [x], { axis, start, end }) => {
    const outer = numel(x.shape.slice(0, axis)), inner = numel(x.shape.slice(axis + 1)), n = x.shape[axis], m = end - start;
    for (let o = 0; o < outer; o++) for (let j = 0; j < m; j++) for (let i = 0; i < inner; i++)
      out[(o * m + j) * inner + i] = x.data[(o * n + start + j) * inner + i];
  },
  concat: (out, [a, b], { axis }) => {
    const outer = numel(a.shape.slice(0, axis)), inner = numel(a.shape.slice(axis + 1));
    const na = a.shape[axis] * inner, nb = b.shape[axis] * inner;
    for (let o = 0; o < outer; o++) {
      out.set(a.data.subarray(o * na, (o + 1) * na), o * (na + nb));
      out.set(b.data.subarray(o * nb, (o + 1) * nb), o * (na + nb) + na);
    }
  },
  pad: (out, [x], { axis, before }, outShape) => {
    const outer = numel(x.shape.slice(0, axis)), inner = numel(x.shape.slice(axis + 1)), n = x.shape[axis], m = outShape[axis];
    out.fill(0);
    for (let o = 0; o < outer; o++) for (let j = 0; j < n; j++) for (let i = 0; i < inner; i++)
      out[(o * m + before + j) * inner + i] = x.data[(o * n + j) * inner + i];
  },
  act_grad: (out, [x, g], { fn }) => {
    const d = ACT_DERIVATIVES[fn];
    for (let i = 0; i < out.length; i++) out[i] = g.data[i] * d(x.data[i]);
  },
  norm_grad: (out, [x, w, g], { kind, eps }) => {
    const C = last(x.shape);
    for (let r = 0; r < x.data.length / C; r++) {
      const o = r * C;
      let mean = 0;
      if (kind === 'layernorm') { for (let c = 0; c < C; c++) mean += x.data[o + c]; mean /= C; }
      let v = 0;
      for (let c = 0; c < C; c++) v += (x.data[o + c] - mean) ** 2;
      const rstd = 1 / Math.sqrt(v / C + eps);
      // With x̂ = (x − mean)·rstd and ĝ = g·w: dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)); rmsnorm has no mean terms.
      let mg = 0, mgx = 0;
      for (let c = 0; c < C; c++) {
        const gh = g.data[o + c] * w.data[c], xh = (x.data[o + c] - mean) * rstd;
        mg += gh; mgx += gh * xh;
      }
      mg = kind === 'layernorm' ? mg / C : 0;
      mgx /= C;
      for (let c = 0; c < C; c++) {
        const gh = g.data[o + c] * w.data[c], xh = (x.data[o + c] - mean) * rstd;
        out[o + c] = rstd * (gh - mg - xh * mgx);
      }
    }
  },
  attention_grad: (out, [q, k, v, g], { pos0, scale, wrt }) => {
    const [B, T, H, D] = q.shape;
    const [, K, S] = k.shape;
    const probs = new Float64Array(S), dp = new Float64Array(S);
    const acc = new Float64Array(out.length);
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) {
      const visible = pos0[b] + t + 1;
      const kh = attnRow(q, k, b, t, h, visible, scale, probs);
      const qo = ((b * T + t) * H + h) * D;
      const kvo = (s: number) => ((b * K + kh) * S + s) * D;
      if (wrt === 'v') { // dV[s] += p[s] · g
        for (let s = 0; s < visible; s++) for (let d = 0; d < D; d++) acc[kvo(s) + d] += probs[s] * g.data[qo + d];
        continue;
      }
      // dP[s] = g · V[s]; dScore[s] = p[s] (dP[s] − Σ p·dP), times the scale for dq and dk.
      let dot = 0;
      for (let s = 0; s < visible; s++) {
        let x = 0;
        for (let d = 0; d < D; d++) x += g.data[qo + d] * v.data[kvo(s) + d];
        dp[s] = x; dot += x * probs[s];
      }
      for (let s = 0; s < visible; s++) {
        const ds = probs[s] * (dp[s] - dot) * scale;
        if (wrt === 'q') for (let d = 0; d < D; d++) acc[qo + d] += ds * k.data[kvo(s) + d];
        else for (let d = 0; d < D; d++) acc[kvo(s) + d] += ds * q.data[qo + d];
      }
    }
    out.set(acc);
  },
  attention_stats: (out, [q, k, y, g], { pos0, scale }) => {
    const [B, T, H, D] = q.shape;
    const scores = new Float64Array(k.shape[2]);
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) {
      const visible = pos0[b] + t + 1;
      const qo = ((b * T + t) * H + h) * D;
      const { mx } = attnScores(q, k, b, t, h, visible, scale, scores);
      let z = 0;
      for (let s = 0; s < visible; s++) z += Math.exp(scores[s] - mx);
      let gy = 0;
      for (let d = 0; d < D; d++) gy += g.data[qo + d] * y.data[qo + d];
      const r = ((b * T + t) * H + h) * 2;
      out[r] = mx + Math.log(z);
      out[r + 1] = gy;
    }
  },
  kv_read: (out, [cache], { pos0, T }) => {
    const [B, K, S, D] = cache.shape;
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let h = 0; h < K; h++) {
      const src = ((b * K + h) * S + pos0[b] + t) * D;
      out.set(cache.data.subarray(src, src + D), ((b * T + t) * K + h) * D);
    }
  },
  scatter_add: (out, [g, idx], { size }) => {
    const k = last(idx.shape);
    out.fill(0);
    for (let r = 0; r < idx.data.length / k; r++) for (let j = 0; j < k; j++) {
      const e = idx.data[r * k + j];
      if (!(e >= 0 && e < size)) throw new RangeError(`scatter_add: index ${e} outside 0..${size - 1}`);
      out[r * size + e] += g.data[r * k + j];
    }
  },
  cross_entropy: (out, [logits, targets]) => {
    const V = last(logits.shape);
    for (let r = 0; r < out.length; r++) {
      const y = targets.data[r];
      if (y < 0) { out[r] = 0; continue; }
      if (y >= V) throw new RangeError(`cross_entropy: target ${y} outside the vocabulary 0..${V - 1}`);
      out[r] = logSumExp(logits.data, r * V, V) - logits.data[r * V + y];
    }
  },
  cross_entropy_grad: (out, [logits, targets, g]) => {
    const V = last(logits.shape);
    for (let r = 0; r < targets.data.length; r++) {
      const y = targets.data[r], o = r * V;
      if (y < 0) { out.fill(0, o, o + V); continue; }
      const lse = logSumExp(logits.data, o, V);
      for (let c = 0; c < V; c++) out[o + c] = (Math.exp(logits.data[o + c] - lse) - (c === y ? 1 : 0)) * g.data[r];
    }
  },
  adam_moments: (out, [state, g], { beta1, beta2, gradScale }) => {
    // In place: `out` IS the state's storage.
    const n = g.data.length;
    for (let i = 0; i < n; i++) {
      const gi = g.data[i] * gradScale;
      out[i] = beta1 * state.data[i] + (1 - beta1) * gi;
      out[n + i] = beta2 * state.data[n + i] + (1 - beta2) * gi * gi;
    }
  },
  adam_apply: (out, [p, state], { lr, eps, weightDecay, bc1, bc2 }) => {
    const n = p.data.length;
    const stepSize = lr / bc1, sq = Math.sqrt(bc2);
    for (let i = 0; i < n; i++) {
      const decayed = Math.fround(p.data[i] * (1 - lr * weightDecay));
      out[i] = decayed - stepSize * state.data[i] / (Math.sqrt(state.data[n + i]) / sq + eps);
    }
  },
  fused_linear: (out, xs, a, outShape) => composeFusedLinear(CPU_KERNELS)(out, xs, a, outShape),
  fused_kv_write: (out, xs, a) => composeFusedKvWrite(CPU_KERNELS)(out, xs, a, xs[0].shape),
  fused_qkv: (out, xs, a, outShape) => composeFusedQkv(CPU_KERNELS)(out, xs, a, outShape),
};

/**
 * `fused_qkv` as its three fused linears over the kernels of `k`: q into out, k and v into the caches
 * xs[0] and xs[1] (in place).
 */
export function composeFusedQkv(k: CpuKernelTable): CpuKernel<'fused_qkv'> {
  const linear = composeFusedLinear(k), kvWrite = composeFusedKvWrite(k);
  return (out, xs, a, outShape) => {
    const parts = splitFusedQkv(xs, a);
    linear(out, parts.q.xs, parts.q.attrs, outShape);
    kvWrite(xs[0].data as Float32Array, [xs[0], ...parts.k.xs], { linear: parts.k.attrs, pos0: a.pos0 }, xs[0].shape);
    kvWrite(xs[1].data as Float32Array, [xs[1], ...parts.v.xs], { linear: parts.v.attrs, pos0: a.pos0 }, xs[1].shape);
  };
}

/** `fused_kv_write` as `fused_linear` then `kv_write` over the kernels of `k` (in place: out is the cache). */
export function composeFusedKvWrite(k: CpuKernelTable): CpuKernel<'fused_kv_write'> {
  return (out, xs, { linear, pos0 }) => {
    const [cache, x] = xs;
    const [B, T] = x.shape, [, K, , D] = cache.shape;
    const y = new Float32Array(B * T * K * D);
    composeFusedLinear(k)(y, xs.slice(1), linear, [B, T, K * D]);
    k.kv_write(out, [cache, { data: y, shape: [B, T, K, D] }], { pos0 }, cache.shape);
  };
}

/**
 * `fused_linear` as the composition of the primitives of `k`, in the order the bricks run them
 * unfused (norm, scale, matmul, bias, activation / GLU, rope, residual add), so a fused forward pass
 * on the CPU gives exactly the unfused pass's values.
 */
export function composeFusedLinear(k: CpuKernelTable): CpuKernel<'fused_linear'> {
  return (out, xs, a, outShape) => {
    const slot = fusedLinearSlots(a);
    const x = xs[0], K = last(x.shape), rows = numel(x.shape) / K, N = last(outShape);
    const step = <O extends OpName>(op: O, ins: HostTensor[], attrs: OpAttrs[O], shape: readonly number[]): HostTensor => {
      const data = new Float32Array(numel(shape));
      (k[op] as CpuKernel<O>)(data, ins, attrs, shape);
      return { data, shape };
    };
    let h = x;
    if (a.norm) {
      h = a.norm.kind === 'rmsnorm'
        ? step('rmsnorm', [x, xs[slot.normW!]], { eps: a.norm.eps }, x.shape)
        : step('layernorm', slot.normB === undefined ? [x, xs[slot.normW!]] : [x, xs[slot.normW!], xs[slot.normB]], { eps: a.norm.eps }, x.shape);
      if (a.norm.scale !== 1) h = step('scale', [h], { s: a.norm.scale }, x.shape);
    }
    const affine = (w: HostTensor, b: number | undefined) => {
      const y = step('matmul', [h, w], { transB: true }, [rows, N]);
      return b === undefined ? y : step('add', [y, xs[b]], {}, [rows, N]);
    };
    let y = affine(xs[1], slot.bias);
    const none = {} as Record<string, never>;
    if (a.act) y = step(a.act, [y], none, [rows, N]);
    if (a.glu) y = step('mul', [y, affine(xs[slot.wUp!], slot.biasUp)], none, [rows, N]);
    if (a.rope) {
      const [B, T] = x.shape, D = a.rope.headDim;
      y = step('rope', [{ data: y.data, shape: [B, T, N / D, D] }], { pos0: a.rope.pos0, invFreq: a.rope.invFreq }, [B, T, N / D, D]);
    }
    if (slot.residual !== undefined) y = step('add', [xs[slot.residual], { data: y.data, shape: outShape }], none, outShape);
    out.set(y.data);
  };
}
