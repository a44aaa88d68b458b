// The primitive op set: one interface maps each op name to its attributes, so `OpName` is a
// closed union and every per-op table (`Record<OpName, …>`: shape rules, CPU kernels, WGSL
// kernels, gradient rules) is forced by the compiler to cover every op.
// Shapes use the project letters: B batch, T time, S cache length, C width, H heads, K kv heads, D head dim.

/** Attributes of every primitive op. Adding an op here makes `tsc` list every table that needs it. */
export interface OpAttrs {
  /** a (..., M, K) @ b (..., K, N), or b (..., N, K) when transB. b may have fewer batch dims (broadcast). */
  matmul: { transB: boolean };
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
  /** x (..., E), idx i32 (..., k) → x gathered along the last axis (..., k). */
  gather: Record<string, never>;
  /** Write new (B, T, K, D) into cache (B, K, S, D) (head-major) at positions pos0[b].. in place; returns the cache. */
  kv_write: { pos0: number[] };
  /** Causal attention. q (B, T, H, D), k/v (B, K, S, D) with H % K == 0 (GQA/MQA); query t of batch b sits
   *  at position pos0[b] + t and attends keys 0 ..= pos0[b] + t. → (B, T, H, D). */
  attention: { pos0: number[]; scale: number };
  /** The attention pattern of `attention`: softmax probabilities (B, H, T, S), zero where masked. */
  attention_probs: { pos0: number[]; scale: number };
}

export type OpName = keyof OpAttrs;

/** Every op name, in a fixed order (derived from a table so it cannot miss one). */
export const OP_NAMES = Object.keys({
  matmul: 1, add: 1, sub: 1, mul: 1, div: 1, scale: 1, silu: 1, relu: 1, gelu_erf: 1, gelu_tanh: 1,
  softmax: 1, sum: 1, max: 1, layernorm: 1, rmsnorm: 1, rope: 1, gather_rows: 1, index_add_rows: 1,
  topk: 1, gather: 1, kv_write: 1, attention: 1, attention_probs: 1,
} satisfies Record<OpName, 1>) as OpName[];
