// Attention brick: multi-head causal self-attention with MHA/GQA/MQA, optional rotary positions
// and biases. With a KV cache the new keys/values are written at each row's position and queries
// attend over the cache; without one (training, one-shot scoring) over the fresh keys only.
// Optional QK(V)-norm normalises each head's q, k (and v) over D before rope.
// A fused form (decode on WebGPU) folds the input norm, rope and the residual add into the projections.
// Points: `<prefix>.q`, `.k`, `.v` (B,T,·,D) after norm and rope, `.pattern` (B,H,T,S) only when asked,
// `.z` (B,T,H·D) before the output projection.

import * as op from '../tensor/api.ts';
import type { AttnSpec } from '../model/spec.ts';
import { linear, linearDecl } from './linear.ts';
import { applyNorm, normDecl, normFlops } from './norm.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { BrickDef, ForwardContext } from './types.ts';

export const ATTENTION: BrickDef<AttnSpec> = {
  weights(model, a, prefix) {
    const C = model.dModel;
    return [
      ...linearDecl(`${prefix}.q`, a.heads * a.headDim, C, a.qkvBias),
      ...linearDecl(`${prefix}.k`, a.kvHeads * a.headDim, C, a.qkvBias),
      ...linearDecl(`${prefix}.v`, a.kvHeads * a.headDim, C, a.qkvBias),
      ...linearDecl(`${prefix}.o`, C, a.heads * a.headDim, a.outBias),
      ...qkNormed(a).flatMap((w) => normDecl(model, `${prefix}.${w}_norm`, a.headDim)),
    ];
  },

  flopsPerToken(model, a, ctxLen) {
    const C = model.dModel;
    const proj = 2 * C * a.headDim * (2 * a.heads + 2 * a.kvHeads);
    const norms = qkNormed(a).reduce((n, w) => n + (w === 'q' ? a.heads : a.kvHeads) * normFlops(model, a.headDim), 0);
    // Scores and weighted sum over ctxLen keys for every head.
    return proj + norms + 4 * a.heads * a.headDim * ctxLen;
  },

  async forward(ctx, a, prefix, x) {
    const { B, T, pos0 } = ctx;
    const D = a.headDim;
    let q = linear(ctx, x, `${prefix}.q`, a.qkvBias).reshape([B, T, a.heads, D]);
    if (a.qkNorm) q = headNorm(ctx, `${prefix}.q_norm`, q);
    if (a.rope) {
      const q2 = op.rope(q, pos0, ctx.invFreq);
      ctx.drop(q);
      q = q2;
    }
    q = await ctx.point(`${prefix}.q`, q);
    const cache = ctx.kv(prefix);
    if (!cache && pos0.some((p) => p !== 0)) throw new Error(`${prefix}: positions start after 0 but no KV cache was given`);
    const { keys, values } = await writeKeysValues(ctx, a, prefix, x, cache);
    const scale = 1 / Math.sqrt(D);
    if (ctx.wants(`${prefix}.pattern`)) await ctx.point(`${prefix}.pattern`, op.attentionProbs(q, keys, pos0, scale));
    const z0 = op.attention(q, keys, values, pos0, scale).reshape([B, T, a.heads * D]);
    ctx.drop(q);
    if (!cache) ctx.drop(keys, values);
    const z = await ctx.point(`${prefix}.z`, z0);
    const y = linear(ctx, z, `${prefix}.o`, a.outBias);
    ctx.drop(z);
    return y;
  },

  async fillCache(ctx, a, prefix, x) {
    const cache = ctx.kv(prefix);
    if (cache) await writeKeysValues(ctx, a, prefix, x, cache);
  },

  points: ['q', 'k', 'v', 'pattern', 'z'],

  // Three dispatches: q, k and v as one (k and v straight into the cache, the input norm and rope folded
  // in); the attention; the output projection with the residual add. Where the backend cannot bind that
  // many tensors to one op, q, k and v take one dispatch each. QK-norm needs whole heads: unfused.
  async fused(ctx, a, prefix, x, { norm, residual }) {
    if (a.qkNorm) return undefined;
    const { B, T, pos0 } = ctx;
    const D = a.headDim;
    const cache0 = ctx.kv(prefix);
    if (!cache0 && pos0.some((p) => p !== 0)) throw new Error(`${prefix}: positions start after 0 but no KV cache was given`);
    const shape = [B, a.kvHeads, T, D];
    const cache = cache0 ?? { k: ctx.backend.zeros(shape, 'f32'), v: ctx.backend.zeros(shape, 'f32') };
    const w = (name: string) => ctx.weight(`${prefix}.${name}`);
    const qkv: op.FusedQkvParts = {
      x, wq: w('q.weight'), wk: w('k.weight'), wv: w('v.weight'), norm,
      bias: a.qkvBias ? { q: w('q.bias'), k: w('k.bias'), v: w('v.bias') } : undefined,
      rope: a.rope ? { invFreq: ctx.invFreq, headDim: D } : undefined,
    };
    let q: Tensor;
    if (op.fusedQkvTensors(qkv) <= (ctx.backend.maxOpTensors ?? Infinity)) {
      q = op.fusedQkv(cache, qkv, pos0);
    } else {
      const rope = a.rope ? { pos0, invFreq: ctx.invFreq, headDim: D } : undefined;
      const parts = (wt: Tensor, bias: Tensor | undefined, rotate: boolean) => ({ x, w: wt, bias, norm, rope: rotate ? rope : undefined });
      q = op.fusedLinear(parts(qkv.wq, qkv.bias?.q, true));
      op.fusedKvWrite(cache.k, parts(qkv.wk, qkv.bias?.k, true), pos0);
      op.fusedKvWrite(cache.v, parts(qkv.wv, qkv.bias?.v, false), pos0);
    }
    const keys = cache.k, values = cache.v;
    const z = op.attention(q.reshape([B, T, a.heads, D]), keys, values, pos0, 1 / Math.sqrt(D)).reshape([B, T, a.heads * D]);
    ctx.drop(q);
    if (!cache0) ctx.drop(keys, values);
    const y = op.fusedLinear({ x: z, w: w('o.weight'), bias: a.outBias ? w('o.bias') : undefined, residual });
    ctx.drop(z);
    return y;
  },
};

/**
 * Project x to keys and values (rope on the keys) and write them at each row's position: into the
 * cache when there is one, else into a temporary head-major (B, K, T, D) buffer that is returned.
 */
async function writeKeysValues(ctx: ForwardContext, a: AttnSpec, prefix: string, x: Tensor, cache: { k: Tensor; v: Tensor } | undefined) {
  const { B, T, pos0 } = ctx;
  const D = a.headDim;
  let k = linear(ctx, x, `${prefix}.k`, a.qkvBias).reshape([B, T, a.kvHeads, D]);
  let v = linear(ctx, x, `${prefix}.v`, a.qkvBias).reshape([B, T, a.kvHeads, D]);
  if (a.qkNorm) k = headNorm(ctx, `${prefix}.k_norm`, k);
  if (a.qkNorm === 'qkv') v = headNorm(ctx, `${prefix}.v_norm`, v);
  if (a.rope) {
    const k2 = op.rope(k, pos0, ctx.invFreq);
    ctx.drop(k);
    k = k2;
  }
  k = await ctx.point(`${prefix}.k`, k);
  v = await ctx.point(`${prefix}.v`, v);
  return storeKeysValues(ctx, a, k, v, cache);
}

/** Write k, v (B, T, K, D) into the cache, or into a fresh head-major (B, K, T, D) pair; k and v are dropped. */
function storeKeysValues(ctx: ForwardContext, a: AttnSpec, k: Tensor, v: Tensor, cache: { k: Tensor; v: Tensor } | undefined) {
  const { B, T, pos0 } = ctx;
  const shape = [B, a.kvHeads, T, a.headDim];
  const keys = op.kvWrite(cache?.k ?? ctx.backend.zeros(shape, 'f32'), k, pos0);
  const values = op.kvWrite(cache?.v ?? ctx.backend.zeros(shape, 'f32'), v, pos0);
  ctx.drop(k, v);
  return { keys, values };
}

/** Which of q, k, v an attention sublayer normalises. */
const qkNormed = (a: AttnSpec): ('q' | 'k' | 'v')[] => (a.qkNorm === 'qkv' ? ['q', 'k', 'v'] : a.qkNorm === 'qk' ? ['q', 'k'] : []);

/** Norm `name` over the head dim of x (B, T, ·, D); x is dropped. */
function headNorm(ctx: ForwardContext, name: string, x: Tensor): Tensor {
  const y = applyNorm(ctx, name, x);
  ctx.drop(x);
  return y;
}
