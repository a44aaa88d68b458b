// The primitive op set: one interface maps each op name to its attributes, so `OpName` is a
// closed union and every per-op table (`Record<OpName, …>`: shape rules, CPU kernels, WGSL
// kernels, gradient rules) is forced by the compiler to cover every op.
// Shapes use the project letters: B batch, T time, S cache length, C width, H heads, K kv heads, D head dim.

/** Attributes of every primitive op. Adding an op here makes `tsc` list every table that needs it. */
export interface OpAttrs {
  /** a (..., M, K) @ b (..., K, N), or b (..., N, K) when transB; a is (..., K, M) when transA (weight
   *  gradients: gᵀ x without a transposed copy). b may have fewer batch dims (broadcast). */
  matmul: { transB: boolean; transA?: boolean };
  /** Elementwise binary ops with numpy broadcasting. */
  add: Record<string, never>;
  sub: Record<string, never>;
  mul: Record<string, never>;
  div: Record<string, never>;
  /** Multiply by a constant. */
  scale: { s: number };
  /** Elementwise activations. */
  silu: Record<string, never>;
  relu: Record<string, never>;
  gelu_erf: Record<string, never>;
  gelu_tanh: Record<string, never>;
  /** Softmax over the last axis. */
  softmax: Record<string, never>;
  /** Reductions over the last axis (the axis is removed). */
  sum: Record<string, never>;
  max: Record<string, never>;
  /** x (..., C), w (C), b (C) optional → (..., C). */
  layernorm: { eps: number };
  /** x (..., C), w (C) → (..., C): x / sqrt(mean(x²) + eps) * w. */
  rmsnorm: { eps: number };
  /** Rotary embedding, HF "rotate_half" layout, on x (B, T, H, D); row t of batch b is at position pos0[b] + t.
   *  invFreq has D/2 entries (rope scaling variants only change it). */
  rope: { pos0: number[]; invFreq: number[] };
  /** table (N, C), idx i32 (...) → (..., C). Used for embeddings and MoE token dispatch. */
  gather_rows: Record<string, never>;
  /** dst (N, C) + scatter src (M, C) into rows idx i32 (M) → new (N, C). Used to combine MoE experts. */
  index_add_rows: Record<string, never>;
  /** Indices (i32) of the k largest values along the last axis, largest first; ties → lower index. */
  topk: { k: number };
  /** One token id (i32) per row of logits (N, V), drawn by u (N), uniform in [0, 1): the distribution after
   *  temperature, top-k (0: none) and top-p (1: none), walked in vocabulary order (`drawToken` in
   *  tensor/sampling.ts, the definition) → (N). */
  sample: { temperature: number; topK: number; topP: number };
  /** Speculative sampling's decision per row: target logits p (N, V), draft logits q (N, V), the drafted ids
   *  d (N) i32 (drawn from q's distribution), uniforms u (N, 2) → i32 (N, 2): [1 if d is accepted else 0,
   *  the token: d, or a draw from the residual max(0, p − q)], both distributions after the same
   *  temperature, top-k and top-p as `sample` (`acceptOrResample` in tensor/sampling.ts, the definition). */
  accept_draft: { temperature: number; topK: number; topP: number };
  /** x (..., E), idx i32 (..., k) → x gathered along the last axis (..., k). */
  gather: Record<string, never>;
  /** Write new (B, T, K, D) into cache (B, K, S, D) (head-major) at positions pos0[b].. in place; returns the cache. */
  kv_write: { pos0: number[] };
  /** Causal attention. q (B, T, H, D), k/v (B, K, S, D) with H % K == 0 (GQA/MQA); query t of batch b sits
   *  at position pos0[b] + t and attends keys 0 ..= pos0[b] + t. → (B, T, H, D). */
  attention: { pos0: number[]; scale: number };
  /** The attention pattern of `attention`: softmax probabilities (B, H, T, S), zero where masked. */
  attention_probs: { pos0: number[]; scale: number };

  // ---- Ops that autograd and training need (see tensor/grad.ts). ----
  /** Reorder axes: out axis i is input axis perm[i]. */
  permute: { perm: number[] };
  /** Sum x down to `shape`, a shape x broadcasts from (numpy rules): the gradient of a broadcast. */
  sum_to: { shape: number[] };
  /** Elements [start, end) of one axis. */
  slice: { axis: number; start: number; end: number };
  /** Two tensors joined along one axis (every other axis equal); f32 or i32, both alike (e.g. token ids
   *  picked on the device, joined into the next pass's input). */
  concat: { axis: number };
  /** Zeros on both sides of one axis (the gradient of `slice`). */
  pad: { axis: number; before: number; after: number };
  /** x, g (same shape) → g · act'(x) for an elementwise activation. */
  act_grad: { fn: 'silu' | 'relu' | 'gelu_erf' | 'gelu_tanh' };
  /** x (..., C), w (C), g (..., C) → d loss / d x of `rmsnorm` or `layernorm` (the weight's own gradient is composed). */
  norm_grad: { kind: 'rmsnorm' | 'layernorm'; eps: number };
  /** q, k, v, g (as `attention`'s output) → the gradient of `attention` with respect to q, k or v
   *  (k and v: the whole (B, K, S, D) key/value tensors). An optional fifth input, the rows' softmax
   *  statistics from `attention_stats`, lets a backend skip recomputing them (the CPU ignores it). */
  attention_grad: { pos0: number[]; scale: number; wrt: 'q' | 'k' | 'v' };
  /** q (B, T, H, D), k (B, K, S, D), y and g (B, T, H, D: `attention`'s output and its gradient) →
   *  (B, T, H, 2): per query row the log-sum-exp of its scaled scores over the visible keys, and
   *  Σ_d g·y (= Σ_s p_s (g·v_s)), the two numbers every attention gradient needs. */
  attention_stats: { pos0: number[]; scale: number };
  /** cache (B, K, S, D) → rows pos0[b] .. pos0[b]+T as (B, T, K, D): the gradient of `kv_write`. */
  kv_read: { pos0: number[]; T: number };
  /** g (..., k), idx i32 (..., k) → (..., size) zeros with g added at idx: the gradient of `gather`. */
  scatter_add: { size: number };
  /** logits (N, V), targets i32 (N) → per-row −log softmax(logits)[target], 0 where target < 0 (ignored). */
  cross_entropy: Record<string, never>;
  /** logits (N, V), targets i32 (N), g (N) → (softmax − onehot) · g, zero rows where target < 0. */
  cross_entropy_grad: Record<string, never>;
  /** In place on state (2, n) = [m; v]: m = β1 m + (1−β1) s·g, v = β2 v + (1−β2) (s·g)², with g (n) and s = gradScale. */
  adam_moments: { beta1: number; beta2: number; gradScale: number };
  /** In place on p (n) with state (2, n): p = p·(1 − lr·wd) − lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps) (torch AdamW). */
  adam_apply: { lr: number; eps: number; weightDecay: number; bc1: number; bc2: number };

  // ---- Fused inference ops (decode on WebGPU is bound by the number of dispatches, not by FLOPs). ----
  /**
   * One linear with what surrounds it in a brick, as one dispatch:
   *   y = residual + post(pre(x) Wᵀ + bias), with pre(x) = norm(x)·normScale and post = rope or act (GLU: act(·) ⊙ (pre(x) Uᵀ + biasUp)).
   * Inputs, in this order, each only when its attribute asks for it: x (..., K), w (N, K),
   * [normW (K), [normB (K)]], [wUp (N, K) when glu], [bias (N), [biasUp (N) when glu]], [residual (..., N)].
   * With rope, x is (B, T, K), the output columns are heads of `headDim`, and row t of batch b sits at
   * position pos0[b] + t. Defined as the composition of the primitives (CPU reference); no gradient:
   * bricks use it only outside a Tape.
   */
  fused_linear: {
    norm?: { kind: 'rmsnorm' | 'layernorm'; eps: number; bias: boolean; scale: number };
    bias: boolean;
    act?: 'silu' | 'relu' | 'gelu_erf' | 'gelu_tanh';
    glu: boolean;
    rope?: { pos0: number[]; invFreq: number[]; headDim: number };
    residual: boolean;
  };
  /**
   * In place on cache (B, K, S, D): the rows of a `fused_linear` on x (B, T, C) (norm, bias and rope
   * only; its N outputs are K heads of D) written at positions pos0[b].. as `kv_write` writes them.
   * Inputs: the cache, then the fused linear's. Returns the cache; no gradient (inference only).
   */
  fused_kv_write: { linear: OpAttrs['fused_linear']; pos0: number[] };
  /**
   * An attention sublayer's three input projections as one dispatch: q is returned, and k and v are
   * written into their caches as `fused_kv_write` writes them. Each projection is the `fused_linear`
   * of x with the shared norm, its own bias, and rope on q and k (v is not rotated).
   * Inputs: kCache, vCache (B, K, S, D), x (B, T, C), wq (H·D, C), wk and wv (K·D, C),
   * [normW (C), [normB (C)]], [bq (H·D), bk (K·D), bv (K·D) when bias]. Output q (B, T, H·D);
   * inputs 0 and 1 are updated in place. No gradient (inference only).
   */
  fused_qkv: {
    norm?: OpAttrs['fused_linear']['norm'];
    bias: boolean;
    rope?: { invFreq: number[]; headDim: number };
    pos0: number[];
  };
}

export type OpName = keyof OpAttrs;

/** Ops that update their input 0 in place and return it (every other op returns a new tensor). */
export const IN_PLACE_OPS: ReadonlySet<OpName> = new Set<OpName>(['kv_write', 'adam_moments', 'adam_apply', 'fused_kv_write']);

/** Ops that update leading inputs in place besides returning a new tensor: how many (inputs 0..n-1). */
export const WRITTEN_INPUTS: Partial<Record<OpName, number>> = { fused_qkv: 2 };

/** Every op name, in a fixed order (derived from a table so it cannot miss one). */
export const OP_NAMES = Object.keys({
  matmul: 1, add: 1, sub: 1, mul: 1, div: 1, scale: 1, silu: 1, relu: 1, gelu_erf: 1, gelu_tanh: 1,
  softmax: 1, sum: 1, max: 1, layernorm: 1, rmsnorm: 1, rope: 1, gather_rows: 1, index_add_rows: 1,
  topk: 1, sample: 1, accept_draft: 1, gather: 1, kv_write: 1, attention: 1, attention_probs: 1,
  permute: 1, sum_to: 1, slice: 1, concat: 1, pad: 1, act_grad: 1, norm_grad: 1, attention_grad: 1, attention_stats: 1, kv_read: 1,
  scatter_add: 1, cross_entropy: 1, cross_entropy_grad: 1, adam_moments: 1, adam_apply: 1,
  fused_linear: 1, fused_kv_write: 1, fused_qkv: 1,
} satisfies Record<OpName, 1>) as OpName[];

/** Where each input of a `fused_linear` sits (undefined: not an input under these attributes). */
export interface FusedLinearSlots { x: 0; w: 1; normW?: number; normB?: number; wUp?: number; bias?: number; biasUp?: number; residual?: number; count: number }

export function fusedLinearSlots(a: OpAttrs['fused_linear']): FusedLinearSlots {
  let n = 2;
  const s: FusedLinearSlots = { x: 0, w: 1, count: 0 };
  if (a.norm) { s.normW = n++; if (a.norm.bias) s.normB = n++; }
  if (a.glu) s.wUp = n++;
  if (a.bias) { s.bias = n++; if (a.glu) s.biasUp = n++; }
  if (a.residual) s.residual = n++;
  s.count = n;
  return s;
}

/** Where each input of a `fused_qkv` sits (undefined: not an input under these attributes). */
export interface FusedQkvSlots { kCache: 0; vCache: 1; x: 2; wq: 3; wk: 4; wv: 5; normW?: number; normB?: number; bq?: number; bk?: number; bv?: number; count: number }

export function fusedQkvSlots(a: OpAttrs['fused_qkv']): FusedQkvSlots {
  let n = 6;
  const s: FusedQkvSlots = { kCache: 0, vCache: 1, x: 2, wq: 3, wk: 4, wv: 5, count: 0 };
  if (a.norm) { s.normW = n++; if (a.norm.bias) s.normB = n++; }
  if (a.bias) { s.bq = n++; s.bk = n++; s.bv = n++; }
  s.count = n;
  return s;
}

/**
 * The three `fused_linear` calls a `fused_qkv` stands for, over its inputs `xs` (shapes, tensors, host
 * arrays): q with rope, k with rope (its rows then go into xs[0]), v without (into xs[1]).
 */
export function splitFusedQkv<T>(xs: readonly T[], a: OpAttrs['fused_qkv']): Record<'q' | 'k' | 'v', { xs: T[]; attrs: OpAttrs['fused_linear'] }> {
  const s = fusedQkvSlots(a);
  const norm = s.normW === undefined ? [] : s.normB === undefined ? [xs[s.normW]] : [xs[s.normW], xs[s.normB]];
  const rope = a.rope && { pos0: a.pos0, invFreq: a.rope.invFreq, headDim: a.rope.headDim };
  const one = (w: number, b: number | undefined, rotate: boolean) => ({
    xs: [xs[s.x], xs[w], ...norm, ...(b === undefined ? [] : [xs[b]])],
    attrs: { norm: a.norm, bias: a.bias, glu: false, residual: false, rope: rotate ? rope : undefined },
  });
  return { q: one(s.wq, s.bq, true), k: one(s.wk, s.bk, true), v: one(s.wv, s.bv, false) };
}
