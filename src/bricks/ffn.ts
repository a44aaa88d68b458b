// FFN brick: plain MLP down(act(up x)) or gated GLU down(act(gate x) · up x) (SwiGLU, GeGLU), with each
// linear dense, low-rank (B·A), block-diagonal (k blocks), or nested (MatFormer: run on the first m
// neurons, m from ForwardContext.ffnWidth). The neuron activations (the input of `down`) are the point
// `<prefix>.act`. MoE experts reuse the body in its dense form.

import type { Tensor } from '../tensor/tensor.ts';
import * as op from '../tensor/api.ts';
import type { FfnSpec, ModelSpec } from '../model/spec.ts';
import { UsageError } from '../util/errors.ts';
import { ACTIVATION_FUSED, ACTIVATION_OPS } from './activation.ts';
import { linear, linearDecl } from './linear.ts';
import type { BrickDef, ForwardContext, WeightDecl } from './types.ts';

/** The shape an FFN-like body needs (shared with MoE experts, which use none of the variants). */
export interface FfnBody {
  hidden: number; gated: boolean; activation: FfnSpec['activation']; bias: boolean;
  rank?: number; blocks?: number; nested?: number[];
}

/** Declarations of one linear (out, in) of the body, in the body's variant. */
function linearVariantDecl(f: FfnBody, name: string, out: number, inp: number): WeightDecl[] {
  if (f.rank) return [...linearDecl(`${name}.a`, f.rank, inp, false), ...linearDecl(`${name}.b`, out, f.rank, f.bias)];
  if (f.blocks) {
    const k = f.blocks;
    const w = { name: `${name}.weight`, shape: [k, out / k, inp / k] };
    return f.bias ? [w, { name: `${name}.bias`, shape: [out] }] : [w];
  }
  return linearDecl(name, out, inp, f.bias);
}

/** FLOPs per token of one linear (out, in) in the body's variant (2 per multiply-add). */
function linearVariantFlops(f: FfnBody, out: number, inp: number): number {
  if (f.rank) return 2 * f.rank * (inp + out);
  if (f.blocks) return (2 * out * inp) / f.blocks;
  return 2 * out * inp;
}

export function ffnBodyDecl(model: ModelSpec, f: FfnBody, prefix: string): WeightDecl[] {
  const C = model.dModel;
  return [
    ...(f.gated ? linearVariantDecl(f, `${prefix}.gate`, f.hidden, C) : []),
    ...linearVariantDecl(f, `${prefix}.up`, f.hidden, C),
    ...linearVariantDecl(f, `${prefix}.down`, C, f.hidden),
  ];
}

/** FLOPs per token of the body at its full width (a nested FFN run narrower costs width/hidden of this). */
export const ffnBodyFlops = (model: ModelSpec, f: FfnBody) =>
  (f.gated ? 2 : 1) * linearVariantFlops(f, f.hidden, model.dModel) + linearVariantFlops(f, model.dModel, f.hidden);

/**
 * The width an FFN runs at when `asked` is requested for it: the full width when nothing is asked, else
 * `asked` itself, which must be one of its nested widths (or its full width).
 */
export function nestedWidth(f: FfnBody, prefix: string, asked: number | undefined): number {
  if (asked === undefined || asked === f.hidden) return f.hidden;
  if (f.nested?.includes(asked)) return asked;
  if (!f.nested) throw new UsageError(`${prefix}: width ${asked} asked, but this FFN is not nested (its only width is ${f.hidden})`,
    'ffnWidth applies to MatFormer FFNs (spec field `nested`); pass a function that returns undefined for the others');
  throw new UsageError(`${prefix}: width ${asked} asked, expected one of its nested widths ${f.nested.join(', ')}`,
    `pick a width the spec lists in layers[…].sublayers[…].nested`);
}

/** x Wᵀ + b for weight and bias tensors (the bias may be absent). */
function affine(ctx: ForwardContext, x: Tensor, w: Tensor, b: Tensor | undefined): Tensor {
  const y = op.matmul(x, w, true);
  if (!b) return y;
  const z = op.add(y, b);
  ctx.drop(y);
  return z;
}

/**
 * One linear of the body on x (..., in) → (..., out). `width` < hidden (nested) uses the first `width`
 * neurons: rows of gate/up (part 'in': hidden is the output) or columns of down (part 'out').
 */
function bodyLinear(ctx: ForwardContext, f: FfnBody, x: Tensor, name: string, out: number, inp: number, part: 'in' | 'out', width: number): Tensor {
  if (f.rank) {
    const h = linear(ctx, x, `${name}.a`, false);
    const y = linear(ctx, h, `${name}.b`, f.bias);
    ctx.drop(h);
    return y;
  }
  if (f.blocks) return blockLinear(ctx, x, name, f.blocks, out, inp, f.bias);
  if (width === f.hidden) return linear(ctx, x, name, f.bias);
  // MatFormer: slice the weights (the slice op's gradient pads, so training reaches the kept neurons only).
  const w = ctx.weight(`${name}.weight`);
  const ws = part === 'in' ? op.slice(w, 0, 0, width) : op.slice(w, 1, 0, width);
  const b = f.bias ? ctx.weight(`${name}.bias`) : undefined;
  const bs = b && part === 'in' ? op.slice(b, 0, 0, width) : b;
  const y = affine(ctx, x, ws, bs);
  ctx.drop(ws, bs === b ? undefined : bs);
  return y;
}

/** Block-diagonal linear: x (..., in) as k blocks of in/k, each times its (out/k, in/k) block. */
function blockLinear(ctx: ForwardContext, x: Tensor, name: string, k: number, out: number, inp: number, bias: boolean): Tensor {
  const lead = x.shape.slice(0, -1);
  const N = lead.reduce((p, d) => p * d, 1);
  const xk = op.permute(x.reshape([N, k, inp / k]), [1, 0, 2]); // (k, N, in/k)
  const yk = op.matmul(xk, ctx.weight(`${name}.weight`), true); // (k, N, out/k)
  ctx.drop(xk);
  const y = op.permute(yk, [1, 0, 2]).reshape([...lead, out]); // (N, k, out/k) → (..., out)
  ctx.drop(yk);
  if (!bias) return y;
  const z = op.add(y, ctx.weight(`${name}.bias`));
  ctx.drop(y);
  return z;
}

/**
 * Runs the FFN body on x (..., C); `actPoint` names the neuron activations (undefined: no point);
 * `width` is the number of neurons to use (nested FFNs; default all).
 */
export async function ffnBody(ctx: ForwardContext, f: FfnBody, prefix: string, x: Tensor, actPoint?: string, width = f.hidden): Promise<Tensor> {
  const C = ctx.spec.dModel;
  const act = ACTIVATION_OPS[f.activation];
  const up = bodyLinear(ctx, f, x, `${prefix}.up`, f.hidden, C, 'in', width);
  let h: Tensor;
  if (f.gated) {
    const g = bodyLinear(ctx, f, x, `${prefix}.gate`, f.hidden, C, 'in', width);
    const a = act(g);
    h = op.mul(a, up);
    ctx.drop(g, a, up);
  } else {
    h = act(up);
    ctx.drop(up);
  }
  if (actPoint) h = await ctx.point(actPoint, h);
  const y = bodyLinear(ctx, f, h, `${prefix}.down`, C, f.hidden, 'out', width);
  ctx.drop(h);
  return y;
}

export const FFN: BrickDef<FfnSpec> = {
  weights: (model, sub, prefix) => ffnBodyDecl(model, sub, prefix),
  flopsPerToken: (model, sub) => ffnBodyFlops(model, sub),
  forward: (ctx, sub, prefix, x) => ffnBody(ctx, sub, prefix, x, `${prefix}.act`, nestedWidth(sub, prefix, ctx.ffnWidth?.(prefix))),
  points: ['act'],
  // Two dispatches: norm + gate/up + activation (+ GLU product), then down + residual. Dense full-width
  // FFNs only; the low-rank, block-diagonal and narrowed nested variants run unfused.
  async fused(ctx, f, prefix, x, { norm, residual }) {
    if (f.rank || f.blocks || nestedWidth(f, prefix, ctx.ffnWidth?.(prefix)) !== f.hidden) return undefined;
    const w = (name: string) => ctx.weight(`${prefix}.${name}.weight`);
    const b = (name: string) => (f.bias ? ctx.weight(`${prefix}.${name}.bias`) : undefined);
    const act = ACTIVATION_FUSED[f.activation];
    const h = f.gated
      ? op.fusedLinear({ x, w: w('gate'), bias: b('gate'), up: { w: w('up'), bias: b('up') }, norm, act })
      : op.fusedLinear({ x, w: w('up'), bias: b('up'), norm, act });
    const y = op.fusedLinear({ x: h, w: w('down'), bias: b('down'), residual });
    ctx.drop(h);
    return y;
  },
};
