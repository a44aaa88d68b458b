// Linear layer helper shared by bricks: y = x Wᵀ (+ b), weights stored (out, in) as nn.Linear does.

import * as op from '../tensor/api.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { ForwardContext, WeightDecl } from './types.ts';

/** y = x @ W(name)ᵀ + bias(name) when the spec says the bias exists. */
export function linear(ctx: ForwardContext, x: Tensor, name: string, bias: boolean): Tensor {
  const y = op.matmul(x, ctx.weight(`${name}.weight`), true);
  if (!bias) return y;
  const z = op.add(y, ctx.weight(`${name}.bias`));
  ctx.drop(y);
  return z;
}

/** Weight declarations of a linear layer (out, in) with optional bias (out). */
export function linearDecl(name: string, out: number, inp: number, bias: boolean): WeightDecl[] {
  return bias ? [{ name: `${name}.weight`, shape: [out, inp] }, { name: `${name}.bias`, shape: [out] }]
    : [{ name: `${name}.weight`, shape: [out, inp] }];
}
