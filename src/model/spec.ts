// ModelSpec: the frozen, JSON-serialisable, per-layer (ragged) description of a model. Each layer
// lists its sublayers in order, its wiring and its norm placement; each sublayer carries its own
// shape. `validateSpec` reports every problem with its path; nothing here holds weights.

import { SpecError } from '../util/errors.ts';

export const SPEC_FORMAT = 'brickwork.spec';
export const SPEC_VERSION = 1;

export type Activation = 'silu' | 'gelu' | 'gelu_tanh' | 'relu';
export const ACTIVATIONS: readonly Activation[] = ['silu', 'gelu', 'gelu_tanh', 'relu'];

/** Normalisation used by every norm of the model. */
export interface NormSpec {
  kind: 'rmsnorm' | 'layernorm';
  eps: number;
  /** LayerNorm bias (ignored by rmsnorm). */
  bias: boolean;
}

/** Where a sublayer's norm sits: pre (x + f(n(x))), post (n(x + f(x))), peri (x + n₂(f(n₁(x)))), none. */
export type NormPlacement = 'pre' | 'post' | 'peri' | 'none';
export const NORM_PLACEMENTS: readonly NormPlacement[] = ['pre', 'post', 'peri', 'none'];

/** Fields every sublayer kind shares. */
interface SublayerBase {
  /** Point/weight name inside the layer; defaults to the kind. */
  name?: string;
  /** This sublayer's norm placement; overrides the layer's `norm` (HybridNorm: attention 'none', FFN 'post'). */
  norm?: NormPlacement;
}

export interface AttnSpec extends SublayerBase {
  kind: 'attn';
  heads: number; // H
  kvHeads: number; // K (H % K == 0: MHA when equal, MQA when 1, GQA between)
  headDim: number; // D
  qkvBias: boolean;
  outBias: boolean;
  /** Apply the model's rotary embedding to q and k. */
  rope: boolean;
  /**
   * Normalise queries and keys ('qk', Qwen3/OLMo-2 QK-norm) and also values ('qkv', HybridNorm) per head
   * over D with the model's norm kind, before rope. Weights `<prefix>.q_norm.weight` etc., shape [D].
   */
  qkNorm?: 'qk' | 'qkv';
}

export interface FfnSpec extends SublayerBase {
  kind: 'ffn';
  hidden: number; // F
  /** Gated (SwiGLU/GeGLU: down(act(gate(x)) * up(x))) or plain MLP (down(act(up(x)))). */
  gated: boolean;
  activation: Activation;
  bias: boolean;
  // At most one of rank, blocks, nested (validated).
  /** Low-rank: every linear W (out, in) is B·A with `<name>.a.weight` (r, in), `<name>.b.weight` (out, r); bias on b. */
  rank?: number;
  /** Block-diagonal: every linear is k independent blocks, `<name>.weight` (k, out/k, in/k); k divides C and F. */
  blocks?: number;
  /**
   * MatFormer: ascending widths ending at `hidden`; the FFN can run on its first m neurons for any m listed
   * (ForwardOptions.ffnWidth picks it; full width by default).
   */
  nested?: number[];
}

export interface MoeSpec extends SublayerBase {
  kind: 'moe';
  experts: number; // E
  topK: number;
  hidden: number; // F of each expert
  gated: boolean;
  activation: Activation;
  bias: boolean;
  /** Whether the chosen experts' softmax weights are renormalised to sum to 1 (Mixtral: true). */
  renormalize: boolean;
}

export type SublayerSpec = AttnSpec | FfnSpec | MoeSpec;
export type SublayerKind = SublayerSpec['kind'];

export interface LayerSpec {
  sublayers: SublayerSpec[];
  /** serial: one sublayer after another; parallel: x + Σ f_i(norm_i(x)) (GPT-J/PaLM style). */
  wiring: 'serial' | 'parallel';
  /** Norm placement of every sublayer that does not set its own. */
  norm: NormPlacement;
  /**
   * LayerNorm Scaling ("The Curse of Depth"): the outputs of this layer's pre/peri input norms are
   * multiplied by this factor (1/sqrt(l) for 1-based layer l; presets compute it). Absent: 1.
   */
  normScale?: number;
}

/**
 * The norm placement a sublayer runs with: its own, else its layer's.
 * @example
 *   placementOf(spec.layers[0], spec.layers[0].sublayers[1]); // 'post' for a HybridNorm FFN
 */
export const placementOf = (layer: LayerSpec, sub: SublayerSpec): NormPlacement => sub.norm ?? layer.norm;

export interface RopeSpec {
  theta: number;
  /** Number of head dims rotated (default: all of them). */
  dim?: number;
  scaling?: { type: 'linear'; factor: number } | {
    type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number;
  };
}

export interface ModelSpec {
  format: typeof SPEC_FORMAT;
  version: number;
  /** HF family it came from, if any (informational). */
  family?: string;
  vocabSize: number; // V
  dModel: number; // C
  maxContext: number;
  norm: NormSpec;
  /** Learned absolute positions (GPT-2) in addition to / instead of rotary. */
  learnedPositions: boolean;
  rope?: RopeSpec;
  /** lm_head shares the embedding matrix. */
  tiedEmbeddings: boolean;
  finalNorm: boolean;
  layers: LayerSpec[];
  /** Token ids that end generation by default. */
  eosTokenIds?: number[];
  bosTokenId?: number;
}

/** The point/weight name of each sublayer of a layer: its kind, suffixed when a kind repeats (ffn, ffn_1, …). */
export function sublayerNames(layer: LayerSpec): string[] {
  const seen = new Map<string, number>();
  return layer.sublayers.map((s) => {
    const base = s.name ?? s.kind;
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    return n === 0 ? base : `${base}_${n}`;
  });
}

const isInt = (x: unknown, min = 1): x is number => typeof x === 'number' && Number.isInteger(x) && x >= min;

/** Every problem of a spec, each with its path. Empty when the spec is valid. */
export function specProblems(spec: unknown): string[] {
  const p: string[] = [];
  const bad = (path: string, expected: string, found: unknown) =>
    p.push(`${path}: expected ${expected}, found ${JSON.stringify(found)}`);
  if (typeof spec !== 'object' || spec === null) return ['spec: expected an object'];
  const s = spec as Partial<ModelSpec> & Record<string, unknown>;
  if (s.format !== SPEC_FORMAT) bad('format', `'${SPEC_FORMAT}'`, s.format);
  if (s.version !== SPEC_VERSION) bad('version', `${SPEC_VERSION} (this Brickwork reads version ${SPEC_VERSION})`, s.version);
  if (!isInt(s.vocabSize)) bad('vocabSize', 'an integer > 0', s.vocabSize);
  if (!isInt(s.dModel)) bad('dModel', 'an integer > 0', s.dModel);
  if (!isInt(s.maxContext)) bad('maxContext', 'an integer > 0', s.maxContext);
  const n = s.norm;
  if (typeof n !== 'object' || n === null) bad('norm', "{kind, eps, bias}", n);
  else {
    if (n.kind !== 'rmsnorm' && n.kind !== 'layernorm') bad('norm.kind', "'rmsnorm' or 'layernorm'", n.kind);
    if (!(typeof n.eps === 'number' && n.eps > 0)) bad('norm.eps', 'a number > 0', n.eps);
    if (typeof n.bias !== 'boolean') bad('norm.bias', 'a boolean', n.bias);
  }
  for (const k of ['learnedPositions', 'tiedEmbeddings', 'finalNorm'] as const)
    if (typeof s[k] !== 'boolean') bad(k, 'a boolean', s[k]);
  if (s.rope !== undefined) {
    const r = s.rope;
    if (!(typeof r.theta === 'number' && r.theta > 0)) bad('rope.theta', 'a number > 0', r.theta);
    if (r.dim !== undefined && !(isInt(r.dim, 2) && r.dim % 2 === 0)) bad('rope.dim', 'an even integer >= 2', r.dim);
    if (r.scaling !== undefined && !['linear', 'llama3'].includes(r.scaling.type)) bad('rope.scaling.type', "'linear' or 'llama3'", r.scaling.type);
  }
  if (!Array.isArray(s.layers) || s.layers.length === 0) {
    bad('layers', 'a non-empty array', s.layers);
    return p;
  }
  s.layers.forEach((l, i) => {
    const lp = `layers[${i}]`;
    if (typeof l !== 'object' || l === null) return bad(lp, 'an object', l);
    if (l.wiring !== 'serial' && l.wiring !== 'parallel') bad(`${lp}.wiring`, "'serial' or 'parallel'", l.wiring);
    if (!NORM_PLACEMENTS.includes(l.norm)) bad(`${lp}.norm`, NORM_PLACEMENTS.map((x) => `'${x}'`).join(' | '), l.norm);
    if (l.wiring === 'parallel' && l.norm === 'post') bad(`${lp}.norm`, "'pre', 'peri' or 'none' with parallel wiring", l.norm);
    if (l.normScale !== undefined && !(typeof l.normScale === 'number' && Number.isFinite(l.normScale) && l.normScale > 0)) bad(`${lp}.normScale`, 'a finite number > 0 (or absent)', l.normScale);
    if (!Array.isArray(l.sublayers)) return bad(`${lp}.sublayers`, 'an array', l.sublayers);
    l.sublayers.forEach((sub, j) => {
      const sp = `${lp}.sublayers[${j}]`;
      if (typeof sub !== 'object' || sub === null) return bad(sp, 'an object', sub);
      if (sub.norm !== undefined) {
        if (!NORM_PLACEMENTS.includes(sub.norm)) bad(`${sp}.norm`, `${NORM_PLACEMENTS.map((x) => `'${x}'`).join(' | ')} (or absent: the layer's)`, sub.norm);
        else if (l.wiring === 'parallel' && sub.norm === 'post') bad(`${sp}.norm`, "'pre', 'peri' or 'none' with parallel wiring", sub.norm);
      }
      const raw = sub as unknown as Record<string, unknown>;
      // Variant fields on a kind that would silently ignore them are mistakes: say so.
      const foreign = sub.kind === 'attn' ? ['rank', 'blocks', 'nested'] : sub.kind === 'moe' ? ['rank', 'blocks', 'nested', 'qkNorm'] : ['qkNorm'];
      for (const k of foreign) if (raw[k] !== undefined) bad(`${sp}.${k}`, `absent on a '${String(sub.kind)}' sublayer`, raw[k]);
      if (sub.kind === 'attn') {
        if (!isInt(sub.heads)) bad(`${sp}.heads`, 'an integer > 0', sub.heads);
        if (!isInt(sub.kvHeads)) bad(`${sp}.kvHeads`, 'an integer > 0', sub.kvHeads);
        else if (isInt(sub.heads) && sub.heads % sub.kvHeads !== 0) bad(`${sp}.kvHeads`, `a divisor of heads (${sub.heads})`, sub.kvHeads);
        if (!isInt(sub.headDim)) bad(`${sp}.headDim`, 'an integer > 0', sub.headDim);
        if (sub.rope && !s.rope) bad(`${sp}.rope`, 'false, or a model-level `rope` section', sub.rope);
        if (sub.rope && s.rope?.dim !== undefined && isInt(sub.headDim) && s.rope.dim > sub.headDim) bad('rope.dim', `<= headDim ${sub.headDim}`, s.rope.dim);
        for (const k of ['qkvBias', 'outBias', 'rope'] as const) if (typeof sub[k] !== 'boolean') bad(`${sp}.${k}`, 'a boolean', sub[k]);
        if (sub.qkNorm !== undefined && sub.qkNorm !== 'qk' && sub.qkNorm !== 'qkv') bad(`${sp}.qkNorm`, "'qk' | 'qkv' (or absent)", sub.qkNorm);
      } else if (sub.kind === 'ffn' || sub.kind === 'moe') {
        if (!isInt(sub.hidden)) bad(`${sp}.hidden`, 'an integer > 0', sub.hidden);
        if (!ACTIVATIONS.includes(sub.activation)) bad(`${sp}.activation`, ACTIVATIONS.join(' | '), sub.activation);
        for (const k of ['gated', 'bias'] as const) if (typeof sub[k] !== 'boolean') bad(`${sp}.${k}`, 'a boolean', sub[k]);
        if (sub.kind === 'ffn') ffnVariantProblems(sub, sp, isInt(s.dModel) ? s.dModel : undefined, p);
        if (sub.kind === 'moe') {
          if (!isInt(sub.experts)) bad(`${sp}.experts`, 'an integer > 0', sub.experts);
          if (!isInt(sub.topK) || (isInt(sub.experts) && sub.topK > sub.experts)) bad(`${sp}.topK`, `an integer in 1..experts`, sub.topK);
          if (typeof sub.renormalize !== 'boolean') bad(`${sp}.renormalize`, 'a boolean', sub.renormalize);
        }
      } else bad(`${sp}.kind`, "'attn' | 'ffn' | 'moe'", (sub as { kind?: unknown }).kind);
    });
  });
  return p;
}

/** Problems of an FFN's variant fields (rank, blocks, nested), appended to `p`. */
function ffnVariantProblems(f: FfnSpec, sp: string, C: number | undefined, p: string[]): void {
  const bad = (path: string, expected: string, found: unknown) => p.push(`${path}: expected ${expected}, found ${JSON.stringify(found)}`);
  const set = (['rank', 'blocks', 'nested'] as const).filter((k) => f[k] !== undefined);
  if (set.length > 1) p.push(`${sp}: expected at most one of rank | blocks | nested (they do not combine), found ${set.join(' and ')}`);
  const F = isInt(f.hidden) ? f.hidden : undefined;
  if (f.rank !== undefined && !isInt(f.rank)) bad(`${sp}.rank`, 'an integer > 0', f.rank);
  if (f.blocks !== undefined) {
    if (!isInt(f.blocks)) bad(`${sp}.blocks`, 'an integer > 0', f.blocks);
    else {
      if (C !== undefined && C % f.blocks !== 0) bad(`${sp}.blocks`, `a divisor of dModel (${C})`, f.blocks);
      if (F !== undefined && F % f.blocks !== 0) bad(`${sp}.blocks`, `a divisor of hidden (${F})`, f.blocks);
    }
  }
  if (f.nested !== undefined) {
    const n = f.nested;
    if (!Array.isArray(n) || n.length === 0) bad(`${sp}.nested`, 'a non-empty array of widths', n);
    else {
      n.forEach((w, i) => {
        if (!isInt(w)) bad(`${sp}.nested[${i}]`, 'an integer > 0', w);
        else if (i > 0 && isInt(n[i - 1]) && !(w > n[i - 1])) bad(`${sp}.nested[${i}]`, `a width > nested[${i - 1}] (${n[i - 1]}): widths ascend`, w);
      });
      if (F !== undefined && n[n.length - 1] !== F) bad(`${sp}.nested[${n.length - 1}]`, `the full width hidden (${F}) as the last width`, n[n.length - 1]);
    }
  }
}

/** Throw a SpecError listing every problem, or return the spec typed. */
export function validateSpec(spec: unknown): ModelSpec {
  const problems = specProblems(spec);
  if (problems.length) throw new SpecError(problems);
  return spec as ModelSpec;
}
