// Norm brick: RMSNorm or LayerNorm over the model width, placed by the layer (pre/post/peri).

import * as op from '../tensor/api.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { ModelSpec } from '../model/spec.ts';
import type { ForwardContext, WeightDecl } from './types.ts';

export function normDecl(model: ModelSpec, name: string): WeightDecl[] {
  const C = model.dModel;
  const w = [{ name: `${name}.weight`, shape: [C] }];
  return model.norm.kind === 'layernorm' && model.norm.bias ? [...w, { name: `${name}.bias`, shape: [C] }] : w;
}

/** Apply norm `name` (its weights `<name>.weight`, `<name>.bias`) as the spec says; needs only the spec and the weights. */
export function applyNorm(ctx: Pick<ForwardContext, 'spec' | 'weight'>, name: string, x: Tensor): Tensor {
  const n = ctx.spec.norm;
  if (n.kind === 'rmsnorm') return op.rmsnorm(x, ctx.weight(`${name}.weight`), n.eps);
  return op.layernorm(x, ctx.weight(`${name}.weight`), n.bias ? ctx.weight(`${name}.bias`) : undefined, n.eps);
}

/** FLOPs per token of one norm (a handful per element; counted so tables add up). */
export const normFlops = (model: ModelSpec) => 5 * model.dModel;
