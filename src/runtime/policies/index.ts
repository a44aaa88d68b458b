// Skip and exit policies. A Policy is bound to one model; each sequence (a generation, a perplexity
// window) gets a PolicySession that, before every forward pass, says which sublayers run (a gate),
// whether to check for an early exit, and how many experts MoE sublayers use. Sessions of per-sequence
// policies also watch the passes they asked to measure. A skipped sublayer is never dispatched.
// Granularity: static (fixed plan), per-sequence (decided after a dense warm-up), per-token (early exit).

import type { ExitCheck, ForwardResult, Model, SublayerGate } from '../../model/assemble.ts';
import { compilePattern } from '../../model/points.ts';
import { sublayerNames } from '../../model/spec.ts';
import { PolicyError } from '../../util/errors.ts';
import { formatPolicy, parsePolicy, type PolicySpec } from './spec.ts';
import { blockTargets, chooseWithin, SimilarityMeter, sublayerTargets, type SkipTarget } from './targets.ts';

export type Granularity = 'static' | 'per-sequence' | 'per-token';

/** What the next forward pass should do (spread into ForwardOptions). */
export interface PassPlan {
  gate?: SublayerGate;
  exit?: ExitCheck;
  moeTopK?: number;
  /** Points the session wants to see in `observe`. */
  capture?: string[];
}

export interface PassInfo {
  B: number;
  T: number;
  /** Tokens whose next-token prediction this pass produced (1 per row when decoding, T when scoring). */
  predicted: number;
  /** Excludes padded positions from measurements. */
  valid?: (b: number, t: number) => boolean;
}

export interface PolicySession {
  /**
   * Options for the next pass. `prefill` passes never exit early. No side effects: generation may ask
   * more than once per pass (a plan without `capture` or `exit` lets it record the pass early).
   */
  plan(phase: 'prefill' | 'decode'): PassPlan;
  /** See the pass that ran with the last plan; disposes what that plan captured. */
  observe(result: ForwardResult, pass: PassInfo): Promise<void>;
  /** Sublayers the current plan skips (early exit varies per token and lists none). */
  readonly skipping: readonly string[];
  /** FLOPs this session added (logit-lens checks). */
  readonly overheadFlops: number;
}

export interface Policy {
  readonly spec: PolicySpec;
  /** Canonical spec string. */
  readonly text: string;
  readonly granularity: Granularity;
  /** Tokens run densely before a per-sequence policy decides (0 for the others). */
  readonly warmupTokens: number;
  /** What the policy does on this model, in one line. */
  describe(): string;
  session(): PolicySession;
}

export interface PolicyOptions {
  /** Token ids to calibrate on (block-influence). */
  calibration?: number[];
  /** Context length at which attention FLOPs are counted (default: half the model's context). */
  ctxLen?: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Bind a policy spec to a model (and calibrate it, for block-influence).
 * @example
 *   const policy = await createPolicy(model, 'ffn-skip:0.25');
 *   await generate(model, [ids], { maxNewTokens: 40, policy });
 */
export async function createPolicy(model: Model, spec: string | PolicySpec, opts: PolicyOptions = {}): Promise<Policy> {
  const s = typeof spec === 'string' ? parsePolicy(spec) : spec;
  const text = formatPolicy(s);
  const ctxLen = opts.ctxLen ?? Math.ceil(model.spec.maxContext / 2);
  switch (s.kind) {
    case 'dense': return fixedPolicy(s, text, 'static', [], undefined, () => 'runs every sublayer');
    case 'static': {
      const skip = resolveStatic(model, s.points, text);
      return fixedPolicy(s, text, 'static', skip, undefined, () => `skips ${skip.length} sublayer${skip.length === 1 ? '' : 's'}: ${compactNames(skip)}`);
    }
    case 'moe-topk': {
      const moes = model.spec.layers.flatMap((l) => l.sublayers).filter((x) => x.kind === 'moe');
      if (moes.length === 0) throw new PolicyError(text, 'the model has no MoE sublayers', 'moe-topk applies to mixture-of-experts models such as Mixtral');
      const most = Math.min(...moes.map((m) => (m.kind === 'moe' ? m.experts : 0)));
      if (s.topK > most) throw new PolicyError(text, `top-k ${s.topK} exceeds the ${most} experts of the model's MoE sublayers`, `use moe-topk:1..${most}`);
      return fixedPolicy(s, text, 'static', [], s.topK, () => `routes every token to ${s.topK} expert${s.topK === 1 ? '' : 's'}`);
    }
    case 'ffn-skip': return ffnSkipPolicy(model, s, text, ctxLen);
    case 'block-influence': return blockInfluencePolicy(model, s, text, ctxLen, opts);
    case 'early-exit': return earlyExitPolicy(model, s, text);
  }
}

/** A policy whose plan never changes. */
function fixedPolicy(spec: PolicySpec, text: string, granularity: Granularity, skip: string[], moeTopK: number | undefined, describe: () => string): Policy {
  const skipSet = new Set(skip);
  const plan: PassPlan = { ...(skip.length ? { gate: (name: string) => !skipSet.has(name) } : {}), ...(moeTopK !== undefined ? { moeTopK } : {}) };
  return {
    spec, text, granularity, warmupTokens: 0, describe,
    session: () => ({ plan: () => plan, observe: async () => {}, skipping: skip, overheadFlops: 0 }),
  };
}

/** Sublayer names of a static plan; every pattern must name at least one sublayer or block. */
function resolveStatic(model: Model, points: string[], text: string): string[] {
  const spec = model.spec;
  const blocks = spec.layers.map((layer, i) => ({ name: `layers.${i}`, subs: sublayerNames(layer).map((n) => `layers.${i}.${n}`) }));
  const out = new Set<string>();
  const L = spec.layers.length;
  const hint = () => {
    const kinds = [...new Set(spec.layers.flatMap((l) => sublayerNames(l)))].join(', ');
    return `name blocks layers.0..layers.${L - 1} or their sublayers (${kinds}), e.g. layers.1-2.${sublayerNames(spec.layers[0])[0]}`;
  };
  for (const p of points) {
    const range = /^layers\.(\d+)-(\d+)(\.|$)/.exec(p);
    if (range) {
      const [lo, hi] = [Number(range[1]), Number(range[2])];
      if (lo > hi) throw new PolicyError(text, `the range ${lo}-${hi} runs backwards`, `write it low to high: ${hi}-${lo}`);
      if (hi >= L) throw new PolicyError(text, `layers ${lo}-${hi} run past the last layer: the model has ${L} layers (0..${L - 1})`, hint());
    }
    const m = compilePattern(p);
    let hit = false;
    for (const b of blocks) {
      if (m(b.name)) { b.subs.forEach((s) => out.add(s)); hit = true; continue; }
      for (const s of b.subs) if (m(s)) { out.add(s); hit = true; }
    }
    if (!hit) {
      const layerNo = /^layers\.(\d+)/.exec(p);
      const why = layerNo && Number(layerNo[1]) >= L
        ? `layer ${layerNo[1]} does not exist: the model has ${L} layers (0..${L - 1})`
        : `'${p}' names no sublayer or block of this model`;
      throw new PolicyError(text, why, hint());
    }
  }
  return [...out].sort(byLayer);
}

const byLayer = (a: string, b: string) => {
  const la = Number(a.split('.')[1]), lb = Number(b.split('.')[1]);
  return la - lb || a.localeCompare(b);
};

/** `layers.2.ffn, layers.5.ffn` → "layers.{2,5}.ffn" style, short enough for a status line. */
export function compactNames(names: readonly string[]): string {
  const groups = new Map<string, number[]>();
  for (const n of names) {
    const [, l, ...rest] = n.split('.');
    const key = rest.join('.');
    groups.set(key, [...(groups.get(key) ?? []), Number(l)]);
  }
  return [...groups].map(([k, ls]) => `layers.${ls.length === 1 ? ls[0] : `{${ls.join(',')}}`}${k ? `.${k}` : ''}`).join(' ') || 'none';
}

/** Layers a policy may touch: all but the first `keepFirst` and last `keepLast`. */
function inner(target: SkipTarget, L: number, keepFirst: number, keepLast: number): boolean {
  return target.layer >= keepFirst && target.layer < L - keepLast;
}

/** Targets skipped: the ranked candidates that fit `fraction` of the family's FLOPs. */
function pick(ranked: SkipTarget[], all: SkipTarget[], fraction: number, fam: 'ffn' | 'attn' | 'both'): SkipTarget[] {
  const flops = (t: SkipTarget) => (fam === 'ffn' ? t.flops.ffn : fam === 'attn' ? t.flops.attn : t.flops.ffn + t.flops.attn);
  return chooseWithin(ranked, fraction, all.reduce((p, t) => p + flops(t), 0), flops);
}

/**
 * FFN-SkipLLM: the first `warmup` predicted tokens run densely while the cosine similarity between
 * the residual before and after every FFN is measured; then the most saturated FFNs (highest
 * similarity), outside the first and last few layers, are skipped for the rest of the sequence, up to
 * `fraction` of the FFN FLOPs.
 */
function ffnSkipPolicy(model: Model, s: Extract<PolicySpec, { kind: 'ffn-skip' }>, text: string, ctxLen: number): Policy {
  const L = model.spec.layers.length;
  const keep = Math.max(1, Math.round(L / 8));
  const keepFirst = s.keepFirst ?? keep, keepLast = s.keepLast ?? keep;
  const ffns = sublayerTargets(model.spec, ctxLen).filter((t) => t.kind !== 'attn');
  if (ffns.length === 0) throw new PolicyError(text, 'the model has no FFN or MoE sublayers');
  const candidates = ffns.filter((t) => inner(t, L, keepFirst, keepLast));
  return {
    spec: s, text, granularity: 'per-sequence', warmupTokens: s.warmup,
    describe: () => `dense for ${s.warmup} tokens, then skips the most saturated FFNs of layers ${keepFirst}..${L - 1 - keepLast} up to ${pct(s.fraction)} of FFN FLOPs`,
    session() {
      const meter = new SimilarityMeter(candidates);
      let predicted = 0;
      let skipping: string[] = [];
      let gate: SublayerGate | undefined;
      const session: PolicySession = {
        get skipping() { return skipping; },
        overheadFlops: 0,
        plan: () => (predicted < s.warmup && candidates.length ? { capture: meter.points } : gate ? { gate } : {}),
        async observe(result, pass) {
          if (predicted >= s.warmup || !candidates.length) return;
          await meter.observe(result.captured, pass.valid);
          for (const p of meter.points) result.captured.get(p)?.dispose();
          predicted += pass.predicted;
          if (predicted < s.warmup) return;
          const ranked = [...candidates].sort((a, b) => meter.mean(b.name) - meter.mean(a.name));
          skipping = pick(ranked, ffns, s.fraction, 'ffn').map((t) => t.name).sort(byLayer);
          const set = new Set(skipping);
          gate = set.size ? (name) => !set.has(name) : undefined;
        },
      };
      return session;
    },
  };
}

/** Block influence (ShortGPT/FinerCut): skip the units with the lowest 1 − cos(in, out) on calibration text. */
async function blockInfluencePolicy(model: Model, s: Extract<PolicySpec, { kind: 'block-influence' }>, text: string, ctxLen: number, opts: PolicyOptions): Promise<Policy> {
  const ids = opts.calibration;
  if (!ids || ids.length < 2) throw new PolicyError(text, 'needs calibration text and got none', 'pass calibration text (--calib FILE on the command line)');
  const L = model.spec.layers.length;
  const all = s.unit === 'block' ? blockTargets(model.spec, ctxLen) : sublayerTargets(model.spec, ctxLen).filter((t) => s.unit === 'sublayer' || (s.unit === 'ffn') === (t.kind !== 'attn'));
  const candidates = all.filter((t) => inner(t, L, s.keepFirst, s.keepLast));
  const influence = await measureInfluence(model, candidates, ids.slice(0, s.calibTokens), opts.onProgress);
  const ranked = [...candidates].sort((a, b) => influence.get(a.name)! - influence.get(b.name)!);
  const chosen = pick(ranked, all, s.fraction, s.unit === 'ffn' ? 'ffn' : s.unit === 'attn' ? 'attn' : 'both');
  const skip = chosen.flatMap((t) => t.sublayers).sort(byLayer);
  const n = Math.min(ids.length, s.calibTokens);
  return fixedPolicy(s, text, 'static', skip, undefined,
    () => `skips ${compactNames(skip)} (lowest block influence on ${n} calibration tokens: ${chosen.map((t) => `${t.name} ${influence.get(t.name)!.toFixed(4)}`).join(', ') || 'none chosen'})`);
}

/** 1 − mean cos(in, out) of every target over the calibration ids, in windows of up to 256 tokens. */
export async function measureInfluence(model: Model, targets: SkipTarget[], ids: number[], onProgress?: (done: number, total: number) => void): Promise<Map<string, number>> {
  const meter = new SimilarityMeter(targets);
  const T = Math.min(256, model.spec.maxContext, ids.length);
  const windows: number[][] = [];
  for (let i = 0; i + 1 < ids.length || i === 0; i += T) windows.push(ids.slice(i, i + T));
  const full = windows.filter((w) => w.length === T);
  const groups: number[][][] = [];
  for (let i = 0; i < full.length; i += 8) groups.push(full.slice(i, i + 8));
  const last = windows[windows.length - 1];
  if (last.length !== T) groups.push([last]);
  let done = 0;
  for (const g of groups) {
    const B = g.length, Tg = g[0].length;
    const r = await model.forward(Int32Array.from(g.flat()), B, Tg, { capture: meter.points, logitRows: new Array(B).fill(Tg - 1) });
    await meter.observe(r.captured);
    for (const t of r.captured.values()) t.dispose();
    r.logits.dispose();
    done += B * Tg;
    onProgress?.(done, ids.length);
  }
  return new Map(targets.map((t) => [t.name, 1 - meter.mean(t.name)]));
}

/**
 * Early exit: after layer `minLayer` and every `every` layers after it, the logit lens (final norm + head) of the newest
 * position is checked; when its top probability reaches the threshold in every row, the pass stops
 * there and those logits are the prediction. Later layers only write their KV cache from the exit
 * residual (see Model.forward), so later tokens attend to a complete cache.
 * NOTE: each check reads the probabilities back, which stalls a GPU pipeline once per layer checked.
 */
function earlyExitPolicy(model: Model, s: Extract<PolicySpec, { kind: 'early-exit' }>, text: string): Policy {
  const L = model.spec.layers.length;
  if (s.minLayer >= L) throw new PolicyError(text, `min-layer ${s.minLayer} leaves no layer to exit at: the model has ${L} layers`, `use min-layer=1..${L - 1}`);
  const V = model.spec.vocabSize, C = model.spec.dModel;
  const lensFlops = 2 * V * C + 5 * C;
  return {
    spec: s, text, granularity: 'per-token', warmupTokens: 0,
    describe: () => `checks the logit lens after ${s.every && s.every > 1 ? `every ${s.every} layers from ` : ''}layer ${s.minLayer} (of ${L}) and exits when it is ${pct(s.threshold)} sure; skipped layers only write their KV cache`,
    session() {
      let overhead = 0;
      const exit: ExitCheck = async (layer, resid) => {
        if (layer + 1 < s.minLayer || (layer + 1 - s.minLayer) % (s.every ?? 1) !== 0) return undefined;
        const logits = model.lens(resid);
        const rows = resid.size / C;
        overhead += rows * lensFlops;
        const p = await logits.toF32();
        for (let r = 0; r < rows; r++) {
          let mx = -Infinity;
          for (let v = 0; v < V; v++) mx = Math.max(mx, p[r * V + v]);
          let z = 0;
          for (let v = 0; v < V; v++) z += Math.exp(p[r * V + v] - mx);
          if (1 / z < s.threshold) { logits.dispose(); return undefined; }
        }
        return logits;
      };
      return {
        skipping: [],
        get overheadFlops() { return overhead; },
        plan: (phase) => (phase === 'decode' ? { exit } : {}),
        observe: async () => {},
      };
    },
  };
}

const pct = (x: number) => `${+(x * 100).toFixed(1)}%`;

export { parsePolicy, formatPolicy, POLICY_SYNTAX, type PolicySpec, type SkipUnit } from './spec.ts';
export { SkipMeter, type SkippedFraction } from './targets.ts';
