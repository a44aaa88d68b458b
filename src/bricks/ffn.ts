// FFN brick: plain MLP down(act(up x)) or gated GLU down(act(gate x) · up x) (SwiGLU, GeGLU).
// The neuron activations (the input of `down`) are the point `<prefix>.act`.

import type { Tensor } from '../tensor/tensor.ts';
import * as op from '../tensor/api.ts';
import type { FfnSpec, ModelSpec } from '../model/spec.ts';
import { ACTIVATION_OPS } from './activation.ts';
import { linear, linearDecl } from './linear.ts';
import type { BrickDef, ForwardContext, WeightDecl } from './types.ts';

/** The shape an FFN-like body needs (shared with MoE experts). */
export interface FfnBody { hidden: number; gated: boolean; activation: FfnSpec['activation']; bias: boolean }

export function ffnBodyDecl(model: ModelSpec, f: FfnBody, prefix: string): WeightDecl[] {
  const C = model.dModel;
  return [
    ...(f.gated ? linearDecl(`${prefix}.gate`, f.hidden, C, f.bias) : []),
    ...linearDecl(`${prefix}.up`, f.hidden, C, f.bias),
    ...linearDecl(`${prefix}.down`, C, f.hidden, f.bias),
  ];
}

export const ffnBodyFlops = (model: ModelSpec, f: FfnBody) => 2 * model.dModel * f.hidden * (f.gated ? 3 : 2);

/** Runs the FFN body on x (..., C); `actPoint` names the neuron activations (undefined: no point). */
export async function ffnBody(ctx: ForwardContext, f: FfnBody, prefix: string, x: Tensor, actPoint?: string): Promise<Tensor> {
  const act = ACTIVATION_OPS[f.activation];
  const up = linear(ctx, x, `${prefix}.up`, f.bias);
  let h: Tensor;
  if (f.gated) {
    const g = linear(ctx, x, `${prefix}.gate`, f.bias);
    const a = act(g);
    h = op.mul(a, up);
    ctx.drop(g, a, up);
  } else {
    h = act(up);
    ctx.drop(up);
  }
  if (actPoint) h = await ctx.point(actPoint, h);
  const y = linear(ctx, h, `${prefix}.down`, f.bias);
  ctx.drop(h);
  return y;
}

export const FFN: BrickDef<FfnSpec> = {
  weights: (model, sub, prefix) => ffnBodyDecl(model, sub, prefix),
  flopsPerToken: (model, sub) => ffnBodyFlops(model, sub),
  forward: (ctx, sub, prefix, x) => ffnBody(ctx, sub, prefix, x, `${prefix}.act`),
};
