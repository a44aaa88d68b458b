// The functional front of the op set: one small function per primitive, so bricks read like math.
// Each call is exactly one backend dispatch; nothing here computes on its own.

import { ShapeError } from '../util/errors.ts';
import type { OpAttrs, OpName } from './ops.ts';
import { activeRecorder } from './record.ts';
import type { Tensor } from './tensor.ts';

function run<O extends OpName>(op: O, xs: Tensor[], attrs: OpAttrs[O]): Tensor {
  // A disposed tensor's storage may already hold another tensor's values: fail instead of reading them.
  for (let i = 0; i < xs.length; i++) if (xs[i].isDisposed) throw new Error(`${op}: input ${i} (${xs[i].dtype} [${xs[i].shape.join(', ')}]) was disposed before this op`);
  const out = xs[0].backend.run(op, xs, attrs);
  activeRecorder()?.record(op, xs, attrs, out);
  return out;
}
const none = {} as Record<string, never>;

/** a @ b, or a @ bᵀ when transB (weights stored (out, in) as nn.Linear does). */
export const matmul = (a: Tensor, b: Tensor, transB = false) => run('matmul', [a, b], { transB });
/** op(a) @ op(b) where op transposes the last two axes when asked (BLAS-style); used by gradients. */
export const matmulT = (a: Tensor, b: Tensor, t: { transA?: boolean; transB?: boolean }) =>
  run('matmul', [a, b], { transB: t.transB ?? false, transA: t.transA ?? false });
export const add = (a: Tensor, b: Tensor) => run('add', [a, b], none);
export const sub = (a: Tensor, b: Tensor) => run('sub', [a, b], none);
export const mul = (a: Tensor, b: Tensor) => run('mul', [a, b], none);
export const div = (a: Tensor, b: Tensor) => run('div', [a, b], none);
export const scale = (a: Tensor, s: number) => run('scale', [a], { s });
export const silu = (a: Tensor) => run('silu', [a], none);
export const relu = (a: Tensor) => run('relu', [a], none);
export const geluErf = (a: Tensor) => run('gelu_erf', [a], none);
export const geluTanh = (a: Tensor) => run('gelu_tanh', [a], none);
export const softmax = (a: Tensor) => run('softmax', [a], none);
export const sum = (a: Tensor) => run('sum', [a], none);
export const max = (a: Tensor) => run('max', [a], none);
export const layernorm = (x: Tensor, w: Tensor, b: Tensor | undefined, eps: number) =>
  run('layernorm', b ? [x, w, b] : [x, w], { eps });
export const rmsnorm = (x: Tensor, w: Tensor, eps: number) => run('rmsnorm', [x, w], { eps });
export const rope = (x: Tensor, pos0: number[], invFreq: number[]) => run('rope', [x], { pos0, invFreq });
export const gatherRows = (table: Tensor, idx: Tensor) => run('gather_rows', [table, idx], none);
export const indexAddRows = (dst: Tensor, src: Tensor, idx: Tensor) => run('index_add_rows', [dst, src, idx], none);
export const topk = (x: Tensor, k: number) => run('topk', [x], { k });
/** A token id per row of logits (N, V), drawn by u (N) in [0, 1) after temperature, top-k (0: none) and top-p (1: none). */
export const sample = (logits: Tensor, u: Tensor, a: OpAttrs['sample']) => run('sample', [logits, u], a);
/** Speculative sampling's accept-or-resample per row: [accepted, token] (N, 2) from target and draft logits
 *  (N, V), drafted ids (N) and two uniforms per row (N, 2). */
export const acceptDraft = (target: Tensor, draft: Tensor, drafted: Tensor, u: Tensor, a: OpAttrs['accept_draft']) =>
  run('accept_draft', [target, draft, drafted, u], a);
export const gather = (x: Tensor, idx: Tensor) => run('gather', [x, idx], none);
export const kvWrite = (cache: Tensor, x: Tensor, pos0: number[]) => run('kv_write', [cache, x], { pos0 });
export const attention = (q: Tensor, k: Tensor, v: Tensor, pos0: number[], scale: number) =>
  run('attention', [q, k, v], { pos0, scale });
export const attentionProbs = (q: Tensor, k: Tensor, pos0: number[], scale: number) =>
  run('attention_probs', [q, k], { pos0, scale });

export const permute = (x: Tensor, perm: number[]) => run('permute', [x], { perm });
export const sumTo = (x: Tensor, shape: readonly number[]) => run('sum_to', [x], { shape: [...shape] });
export const slice = (x: Tensor, axis: number, start: number, end: number) => run('slice', [x], { axis, start, end });
export const concat = (a: Tensor, b: Tensor, axis: number) => run('concat', [a, b], { axis });
export const pad = (x: Tensor, axis: number, before: number, after: number) => run('pad', [x], { axis, before, after });
export const actGrad = (x: Tensor, g: Tensor, fn: OpAttrs['act_grad']['fn']) => run('act_grad', [x, g], { fn });
export const normGrad = (x: Tensor, w: Tensor, g: Tensor, kind: OpAttrs['norm_grad']['kind'], eps: number) =>
  run('norm_grad', [x, w, g], { kind, eps });
export const attentionGrad = (q: Tensor, k: Tensor, v: Tensor, g: Tensor, pos0: number[], scale: number, wrt: 'q' | 'k' | 'v', stats?: Tensor) =>
  run('attention_grad', stats ? [q, k, v, g, stats] : [q, k, v, g], { pos0, scale, wrt });
/** Per query row of `attention`: (log-sum-exp of the scaled scores, Σ g·y), shape (B, T, H, 2). */
export const attentionStats = (q: Tensor, k: Tensor, y: Tensor, g: Tensor, pos0: number[], scale: number) =>
  run('attention_stats', [q, k, y, g], { pos0, scale });
export const kvRead = (cache: Tensor, pos0: number[], T: number) => run('kv_read', [cache], { pos0, T });
export const scatterAdd = (g: Tensor, idx: Tensor, size: number) => run('scatter_add', [g, idx], { size });
/** Per-row cross-entropy of logits (N, V) against i32 targets (N); rows with target < 0 score 0. */
export const crossEntropy = (logits: Tensor, targets: Tensor) => run('cross_entropy', [logits, targets], none);
export const crossEntropyGrad = (logits: Tensor, targets: Tensor, g: Tensor) => run('cross_entropy_grad', [logits, targets, g], none);
export const adamMoments = (state: Tensor, g: Tensor, a: OpAttrs['adam_moments']) => run('adam_moments', [state, g], a);
export const adamApply = (p: Tensor, state: Tensor, a: OpAttrs['adam_apply']) => run('adam_apply', [p, state], a);

/** The pieces of a `fused_linear` (see OpAttrs.fused_linear); absent pieces are not applied. */
export interface FusedLinearParts {
  /** Input (..., K); (B, T, K) with rope. */
  x: Tensor;
  /** Weight (N, K), stored (out, in). */
  w: Tensor;
  /** Normalise x first: weight (K), LayerNorm bias (K), and a factor applied after the norm (default 1). */
  norm?: { kind: 'rmsnorm' | 'layernorm'; eps: number; w: Tensor; b?: Tensor; scale?: number };
  bias?: Tensor;
  act?: OpAttrs['fused_linear']['act'];
  /** GLU: the up weight (N, K) (and its bias); the result is act(x Wᵀ + b) ⊙ (x Uᵀ + bu). */
  up?: { w: Tensor; bias?: Tensor };
  rope?: OpAttrs['fused_linear']['rope'];
  /** Added to the result (..., N). */
  residual?: Tensor;
}

/**
 * One dispatch for a brick's linear and what surrounds it: residual + post(norm(x) Wᵀ + b).
 * @example
 *   const y = fusedLinear({ x, w: wDown, residual: x0 }); // x0 + x W_downᵀ
 */
export function fusedLinear(p: FusedLinearParts): Tensor {
  const { xs, attrs } = fusedLinearCall(p);
  return run('fused_linear', xs, attrs);
}

/**
 * A fused linear (norm, bias, rope) on x (B, T, C) whose rows go straight into a KV cache (B, K, S, D)
 * at positions pos0[b]..; returns the cache.
 * @example
 *   fusedKvWrite(cache.k, { x, w: wk, norm, rope: { pos0, invFreq, headDim: D } }, pos0);
 */
export function fusedKvWrite(cache: Tensor, p: FusedLinearParts, pos0: number[]): Tensor {
  const { xs, attrs } = fusedLinearCall(p);
  return run('fused_kv_write', [cache, ...xs], { linear: attrs, pos0 });
}

/** The pieces of a `fused_qkv`: the sublayer's input, its three projections, the shared norm and rope. */
export interface FusedQkvParts {
  /** Input (B, T, C). */
  x: Tensor;
  /** Weights (H·D, C), (K·D, C), (K·D, C), stored (out, in). */
  wq: Tensor; wk: Tensor; wv: Tensor;
  /** Biases of all three projections, or none. */
  bias?: { q: Tensor; k: Tensor; v: Tensor };
  norm?: FusedLinearParts['norm'];
  /** Rotary positions on q and k (the positions are the cache's). */
  rope?: { invFreq: number[]; headDim: number };
}

/**
 * q, k and v of an attention sublayer in one dispatch: returns q (B, T, H·D) and writes k and v at
 * positions pos0[b].. into their caches (B, K, S, D).
 * @example
 *   const q = fusedQkv(cache, { x, wq, wk, wv, norm, rope: { invFreq, headDim: D } }, pos0);
 */
export function fusedQkv(cache: { k: Tensor; v: Tensor }, p: FusedQkvParts, pos0: number[]): Tensor {
  if (cache.k.handle === cache.v.handle) throw new ShapeError('fused_qkv', 'the key and value caches share storage; give each its own tensor');
  return run('fused_qkv', [cache.k, cache.v, ...qkvInputs(p)], { norm: normAttrs(p.norm), bias: p.bias !== undefined, rope: p.rope, pos0 });
}

/** How many tensors a `fused_qkv` of these parts binds: the two caches, its inputs and q (see Backend.maxOpTensors). */
export const fusedQkvTensors = (p: FusedQkvParts): number => qkvInputs(p).length + 3;

/** A fused_qkv's inputs after the caches, in OpAttrs order. */
function qkvInputs(p: FusedQkvParts): Tensor[] {
  const xs = [p.x, p.wq, p.wk, p.wv];
  if (p.norm) { xs.push(p.norm.w); if (p.norm.b) xs.push(p.norm.b); }
  if (p.bias) xs.push(p.bias.q, p.bias.k, p.bias.v);
  return xs;
}

const normAttrs = (n: FusedLinearParts['norm']): OpAttrs['fused_linear']['norm'] =>
  n && { kind: n.kind, eps: n.eps, bias: n.b !== undefined, scale: n.scale ?? 1 };

function fusedLinearCall(p: FusedLinearParts): { xs: Tensor[]; attrs: OpAttrs['fused_linear'] } {
  if (p.up && (p.up.bias === undefined) !== (p.bias === undefined)) throw new Error('fusedLinear: the gate and up projections must both have a bias or neither');
  const attrs: OpAttrs['fused_linear'] = {
    norm: normAttrs(p.norm),
    bias: p.bias !== undefined, act: p.act, glu: p.up !== undefined, rope: p.rope, residual: p.residual !== undefined,
  };
  const xs = [p.x, p.w];
  if (p.norm) { xs.push(p.norm.w); if (p.norm.b) xs.push(p.norm.b); }
  if (p.up) xs.push(p.up.w);
  if (p.bias) { xs.push(p.bias); if (p.up?.bias) xs.push(p.up.bias); }
  if (p.residual) xs.push(p.residual);
  return { xs, attrs };
}

/** Dispose every tensor given (undefined entries are skipped). */
export function dispose(...ts: (Tensor | undefined)[]): void {
  for (const t of ts) t?.dispose();
}
