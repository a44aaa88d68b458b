// Presets of the architecture zoo: small Llama-style specs (RMSNorm, RoPE, GQA, SwiGLU) under each norm
// scheme — Pre-LN, Post-LN, Peri-LN, Mix-LN, HybridNorm, LayerNorm Scaling — with optional parallel
// wiring, per-layer sublayer patterns (PAR: fewer attention than FFN sublayers) and FFN variants.
// They only build ModelSpecs (validated); weights come from `randomModel` or a checkpoint.

import { UsageError } from '../util/errors.ts';
import { SPEC_FORMAT, SPEC_VERSION, validateSpec, type AttnSpec, type FfnSpec, type LayerSpec, type ModelSpec, type MoeSpec, type NormPlacement, type SublayerSpec } from './spec.ts';

/**
 * Norm schemes: 'pre' (x + f(n(x))), 'post' (n(x + f(x)), no final norm), 'peri' (x + n₂(f(n₁(x)))),
 * 'mix' (Mix-LN: post-norm in the first round(mixPostFraction · L) layers, pre-norm after), 'hybrid'
 * (HybridNorm: attention with QKV-norm and no input norm, FFN post-norm), 'lns' (pre-norm with LayerNorm
 * Scaling: layer l's input norms times 1/sqrt(l), l counted from 1).
 */
export type NormScheme = 'pre' | 'post' | 'peri' | 'mix' | 'hybrid' | 'lns';
export const NORM_SCHEMES: readonly NormScheme[] = ['pre', 'post', 'peri', 'mix', 'hybrid', 'lns'];

/** How the FFN sublayers are built: low-rank, block-diagonal, nested (MatFormer) or mixture-of-experts. */
export type FfnVariant =
  | { rank: number }
  | { blocks: number }
  | { nested: number[] }
  | { experts: number; topK: number; renormalize?: boolean };

export interface ZooOptions {
  vocab: number; // V
  width: number; // C
  layers: number; // L
  heads: number; // H (head dim = width / heads)
  kvHeads?: number; // K (default: heads)
  ffn: number; // F
  context?: number; // default 2048
  scheme: NormScheme;
  /** Mix-LN: share of layers (from the first) that use post-norm; default 0.25. */
  mixPostFraction?: number;
  /** Parallel attention + FFN (GPT-J/PaLM); not with post-norm schemes. */
  parallel?: boolean;
  ffnVariant?: FfnVariant;
  /**
   * Sublayers of each layer as '+'-joined kinds, e.g. ['attn+ffn', 'ffn'] (repeated to fill `layers`).
   * Default: 'attn+ffn' everywhere.
   */
  pattern?: string[];
  /** PAR-style shorthand: attention only in layers 0, n, 2n, …; FFN in every layer. */
  attnEvery?: number;
  /** Add QK-norm ('qk') or QKV-norm ('qkv') to every attention (HybridNorm always uses 'qkv'). */
  qkNorm?: 'qk' | 'qkv';
  /** Norm kind (default rmsnorm); 'layernorm' has a bias. */
  norm?: 'rmsnorm' | 'layernorm';
}

/**
 * A small Llama-style spec under one norm scheme of the zoo, validated.
 * @example
 *   const spec = zooSpec({ vocab: 512, width: 128, layers: 8, heads: 4, ffn: 384, scheme: 'mix' });
 *   const hybrid = zooSpec({ vocab: 512, width: 128, layers: 8, heads: 4, ffn: 384, scheme: 'hybrid',
 *     ffnVariant: { nested: [96, 192, 384] }, attnEvery: 2 });
 *   const model = randomModel(spec, await getBackend('cpu'), { seed: 1 });
 */
export function zooSpec(o: ZooOptions): ModelSpec {
  const L = o.layers;
  if (!NORM_SCHEMES.includes(o.scheme)) throw new UsageError(`zooSpec: scheme: expected ${NORM_SCHEMES.join(' | ')}, found ${JSON.stringify(o.scheme)}`, 'pick one of the listed norm schemes');
  if (!(Number.isInteger(L) && L > 0)) throw new UsageError(`zooSpec: layers: expected an integer > 0, found ${L}`, 'give the number of layers');
  if (!(Number.isInteger(o.heads) && o.heads > 0 && o.width % o.heads === 0)) throw new UsageError(`zooSpec: heads: expected a divisor of width ${o.width}, found ${o.heads}`, 'the head dim is width / heads');
  const frac = o.mixPostFraction ?? 0.25;
  if (!(frac >= 0 && frac <= 1)) throw new UsageError(`zooSpec: mixPostFraction: expected a number in [0, 1], found ${frac}`, 'the share of layers (from the first) that use post-norm');
  const nPost = o.scheme === 'mix' ? Math.round(frac * L) : 0;
  if (o.parallel && (o.scheme === 'post' || o.scheme === 'hybrid' || (o.scheme === 'mix' && nPost > 0)))
    throw new UsageError(`zooSpec: scheme '${o.scheme}' uses post-norm, which parallel wiring cannot have`, "use parallel with 'pre', 'peri' or 'lns'");
  const kinds = layerKinds(o);

  const headDim = o.width / o.heads;
  const qkNorm = o.scheme === 'hybrid' ? 'qkv' : o.qkNorm;
  const attn = (): AttnSpec => ({
    kind: 'attn', heads: o.heads, kvHeads: o.kvHeads ?? o.heads, headDim, qkvBias: false, outBias: false, rope: true,
    ...(qkNorm ? { qkNorm } : {}), ...(o.scheme === 'hybrid' ? { norm: 'none' as const } : {}),
  });
  const ffn = (): FfnSpec | MoeSpec => {
    const v = o.ffnVariant;
    const base = { hidden: o.ffn, gated: true, activation: 'silu' as const, bias: false, ...(o.scheme === 'hybrid' ? { norm: 'post' as const } : {}) };
    if (v && 'experts' in v) return { kind: 'moe', experts: v.experts, topK: v.topK, renormalize: v.renormalize ?? true, ...base };
    return { kind: 'ffn', ...base, ...(v ?? {}) };
  };
  const layers: LayerSpec[] = kinds.map((ks, i) => {
    const norm: NormPlacement = o.scheme === 'lns' ? 'pre' : o.scheme === 'mix' ? (i < nPost ? 'post' : 'pre') : o.scheme === 'hybrid' ? 'post' : o.scheme;
    const sublayers: SublayerSpec[] = ks.map((k) => (k === 'attn' ? attn() : ffn()));
    const layer: LayerSpec = { wiring: o.parallel ? 'parallel' : 'serial', norm, sublayers };
    if (o.scheme === 'lns') layer.normScale = 1 / Math.sqrt(i + 1);
    return layer;
  });
  return validateSpec({
    format: SPEC_FORMAT, version: SPEC_VERSION, family: `zoo-${o.scheme}`,
    vocabSize: o.vocab, dModel: o.width, maxContext: o.context ?? 2048,
    norm: o.norm === 'layernorm' ? { kind: 'layernorm', eps: 1e-5, bias: true } : { kind: 'rmsnorm', eps: 1e-5, bias: false },
    learnedPositions: false, rope: { theta: 10000 }, tiedEmbeddings: false,
    // Post-LN ends every layer in a norm already; every other scheme needs the final one.
    finalNorm: o.scheme !== 'post',
    layers,
  });
}

/** The sublayer kinds of every layer, from `pattern` or `attnEvery` (default: attention + FFN). */
function layerKinds(o: ZooOptions): ('attn' | 'ffn')[][] {
  if (o.pattern && o.attnEvery !== undefined) throw new UsageError('zooSpec: both pattern and attnEvery given', 'give one of them');
  if (o.attnEvery !== undefined) {
    const n = o.attnEvery;
    if (!(Number.isInteger(n) && n > 0)) throw new UsageError(`zooSpec: attnEvery: expected an integer > 0, found ${n}`, 'attention runs in layers 0, n, 2n, …');
    return Array.from({ length: o.layers }, (_, i) => (i % n === 0 ? ['attn', 'ffn'] : ['ffn']));
  }
  const pattern = o.pattern ?? ['attn+ffn'];
  if (pattern.length === 0) throw new UsageError('zooSpec: pattern: expected at least one entry, found []', "e.g. ['attn+ffn', 'ffn']");
  const parsed = pattern.map((entry, i) => {
    const ks = entry.split('+').map((k) => k.trim());
    const badKind = ks.find((k) => k !== 'attn' && k !== 'ffn');
    if (badKind !== undefined || ks.length === 0) throw new UsageError(`zooSpec: pattern[${i}]: expected '+'-joined 'attn' | 'ffn', found ${JSON.stringify(entry)}`, "e.g. 'attn+ffn', 'ffn', 'ffn+ffn'");
    return ks as ('attn' | 'ffn')[];
  });
  return Array.from({ length: o.layers }, (_, i) => parsed[i % parsed.length]);
}
