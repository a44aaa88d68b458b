// The contract between a brick and the model that runs it. A brick declares its weights (canonical
// names and shapes), its cost per token, and its forward pass written with tensor/api ops; it
// reads weights and names activation points only through the ForwardContext.

import type { Tensor, Backend } from '../tensor/tensor.ts';
import type { FusedLinearParts } from '../tensor/api.ts';
import type { ModelSpec, SublayerSpec } from '../model/spec.ts';

/** A weight a brick needs: canonical name and shape. */
export interface WeightDecl {
  name: string;
  shape: number[];
}

/** What a brick may see of the running forward pass. */
export interface ForwardContext {
  readonly spec: ModelSpec;
  readonly backend: Backend;
  /** Batch size and number of new positions in this pass. */
  readonly B: number;
  readonly T: number;
  /** Absolute position of row 0 of each batch entry. */
  readonly pos0: number[];
  /** RoPE inverse frequencies (empty when the model has no rope section). */
  readonly invFreq: number[];
  weight(name: string): Tensor;
  hasWeight(name: string): boolean;
  /** Pass a value through a named activation point: captured if asked, replaced if a hook says so. */
  point(name: string, t: Tensor): Promise<Tensor>;
  /** Whether anyone asked for this point (lets a brick skip computing an optional value). */
  wants(name: string): boolean;
  /** Experts per token for MoE sublayers when a request overrides the spec's top-k. */
  readonly moeTopK?: number;
  /** The width an FFN sublayer (`layers.3.ffn`) is asked to run at (MatFormer); undefined: its full width. */
  ffnWidth?(prefix: string): number | undefined;
  /** Told by each MoE sublayer its router probabilities (N, E) and tokens per expert (load-balancing loss). */
  moeRouted?(prefix: string, probs: Tensor, counts: number[]): void;
  /** The KV cache slot of an attention sublayer, when this pass uses a cache. */
  kv(prefix: string): { k: Tensor; v: Tensor } | undefined;
  /** Dispose intermediates that nobody captured. */
  drop(...ts: (Tensor | undefined)[]): void;
}

/** One kind of sublayer. `prefix` is its full name, e.g. `layers.3.attn`. */
export interface BrickDef<S extends SublayerSpec> {
  weights(model: ModelSpec, sub: S, prefix: string): WeightDecl[];
  /** FLOPs per token (2 per multiply-add) at a given context length. */
  flopsPerToken(model: ModelSpec, sub: S, ctxLen: number): number;
  /** x (B, T, C) → output (B, T, C), before the residual add. */
  forward(ctx: ForwardContext, sub: S, prefix: string, x: Tensor): Promise<Tensor>;
  /**
   * Only the KV-cache writes of `forward` for input x (B, T, C), for bricks that keep a cache: used
   * when an early exit skips the brick but later tokens will still attend to these positions.
   */
  fillCache?(ctx: ForwardContext, sub: S, prefix: string, x: Tensor): Promise<void>;
  /** The points `forward` names under its prefix (`q` for `layers.3.attn.q`): a fused pass produces none. */
  points?: readonly string[];
  /**
   * The sublayer with its input norm and residual add in as few dispatches as it can (`fused_linear`):
   * returns residual + forward(norm(x)) as `forward` computes it, or undefined when this variant has no
   * fused form (the model then runs `forward`). The model calls it only outside a Tape, when fusion
   * is on and none of the sublayer's points is captured or hooked.
   */
  fused?(ctx: ForwardContext, sub: S, prefix: string, x: Tensor, io: FusedIo): Promise<Tensor | undefined>;
}

/** What a fused sublayer folds in: its input norm (absent: none) and the residual its output is added to. */
export interface FusedIo {
  norm?: FusedLinearParts['norm'];
  residual: Tensor;
}
