// Norm brick: RMSNorm or LayerNorm over the last axis, placed by the layer (pre/post/peri) or inside
// attention (QK-norm over the head dim). Weights are named `<name>.weight` (and `.bias` for a LayerNorm
// with bias); their width is the model width unless a caller declares another (head dim for QK-norm).

import * as op from '../tensor/api.ts';
import type { FusedLinearParts } from '../tensor/api.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { ModelSpec } from '../model/spec.ts';
import type { ForwardContext, WeightDecl } from './types.ts';

/** Weights of norm `name` over `width` features (default: the model width C). */
export function normDecl(model: ModelSpec, name: string, width = model.dModel): WeightDecl[] {
  const w = [{ name: `${name}.weight`, shape: [width] }];
  return model.norm.kind === 'layernorm' && model.norm.bias ? [...w, { name: `${name}.bias`, shape: [width] }] : w;
}

/**
 * Apply norm `name` (its weights `<name>.weight`, `<name>.bias`) as the spec says, over the last axis of
 * x, whose size must be the width the norm was declared with; needs only the spec and the weights.
 */
export function applyNorm(ctx: Pick<ForwardContext, 'spec' | 'weight'>, name: string, x: Tensor): Tensor {
  const n = ctx.spec.norm;
  if (n.kind === 'rmsnorm') return op.rmsnorm(x, ctx.weight(`${name}.weight`), n.eps);
  return op.layernorm(x, ctx.weight(`${name}.weight`), n.bias ? ctx.weight(`${name}.bias`) : undefined, n.eps);
}

/** Norm `name` as the `norm` part of a fused linear, times `scale` (LayerNorm Scaling). */
export function normParts(ctx: Pick<ForwardContext, 'spec' | 'weight'>, name: string, scale = 1): NonNullable<FusedLinearParts['norm']> {
  const n = ctx.spec.norm;
  const w = ctx.weight(`${name}.weight`);
  if (n.kind === 'rmsnorm') return { kind: 'rmsnorm', eps: n.eps, w, scale };
  return { kind: 'layernorm', eps: n.eps, w, b: n.bias ? ctx.weight(`${name}.bias`) : undefined, scale };
}

/** FLOPs per token of one norm over `width` features (a handful per element; counted so tables add up). */
export const normFlops = (model: ModelSpec, width = model.dModel) => 5 * width;
