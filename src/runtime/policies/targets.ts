// What a policy can skip and how it is measured: every sublayer (and every whole block) of a spec as a
// SkipTarget with its FLOPs and the residual points around it; the cosine similarity of the residual
// before and after each target, averaged over tokens (FFN-SkipLLM's saturation, ShortGPT's block
// influence = 1 − that); and the meter that adds up the FLOPs a run really skipped.

import { brickOf } from '../../bricks/index.ts';
import { brickCosts, type ForwardResult } from '../../model/assemble.ts';
import { sublayerNames, type ModelSpec } from '../../model/spec.ts';
import type { Tensor } from '../../tensor/tensor.ts';

export interface SkipTarget {
  /** `layers.3.ffn` for a sublayer, `layers.3` for a whole block. */
  name: string;
  layer: number;
  kind: 'attn' | 'ffn' | 'moe' | 'block';
  /** Index of the sublayer in its layer (-1 for a block). */
  index: number;
  /** The sublayers gated off when this target is skipped. */
  sublayers: string[];
  /** Residual points around the target: similarity is cos(before, after), or cos(before, before + addOut) for parallel wiring. */
  before: string;
  after: string;
  addOut?: string;
  /** FLOPs per token the target costs, split by sublayer family (MoE counts as FFN). */
  flops: { ffn: number; attn: number };
}

/** FLOPs family of a sublayer kind. */
const family = (kind: string): 'ffn' | 'attn' => (kind === 'attn' ? 'attn' : 'ffn');

/** Every sublayer of the spec as a target, in layer order. */
export function sublayerTargets(spec: ModelSpec, ctxLen: number): SkipTarget[] {
  const cost = new Map(brickCosts(spec, ctxLen).map((c) => [c.name, c.flopsPerToken]));
  const out: SkipTarget[] = [];
  spec.layers.forEach((layer, i) => {
    const names = sublayerNames(layer);
    const n = layer.sublayers.length;
    const mid = (j: number) => (n === 2 ? `layers.${i}.resid.mid` : `layers.${i}.resid.mid.${j}`);
    layer.sublayers.forEach((sub, j) => {
      const name = `layers.${i}.${names[j]}`;
      const f = cost.get(name)!;
      const parallel = layer.wiring === 'parallel';
      out.push({
        name, layer: i, kind: sub.kind, index: j, sublayers: [name],
        before: parallel || j === 0 ? `layers.${i}.resid.pre` : mid(j - 1),
        after: parallel ? `layers.${i}.resid.post` : j === n - 1 ? `layers.${i}.resid.post` : mid(j),
        ...(parallel ? { addOut: `${name}.out` } : {}),
        flops: { ffn: family(sub.kind) === 'ffn' ? f : 0, attn: family(sub.kind) === 'attn' ? f : 0 },
      });
    });
  });
  return out;
}

/** Every layer as one target (resid.pre → resid.post). */
export function blockTargets(spec: ModelSpec, ctxLen: number): SkipTarget[] {
  const subs = sublayerTargets(spec, ctxLen);
  return spec.layers.map((_, i) => {
    const mine = subs.filter((s) => s.layer === i);
    return {
      name: `layers.${i}`, layer: i, kind: 'block', index: -1, sublayers: mine.map((s) => s.name),
      before: `layers.${i}.resid.pre`, after: `layers.${i}.resid.post`,
      flops: { ffn: mine.reduce((p, s) => p + s.flops.ffn, 0), attn: mine.reduce((p, s) => p + s.flops.attn, 0) },
    };
  });
}

/** Accumulates, per target, the mean cosine similarity between the residual before and after it. */
export class SimilarityMeter {
  private readonly sum = new Map<string, number>();
  private readonly count = new Map<string, number>();
  /** The points a forward pass must capture for `observe`. */
  readonly points: string[];
  constructor(readonly targets: SkipTarget[]) {
    this.points = [...new Set(targets.flatMap((t) => [t.before, t.after, ...(t.addOut ? [t.addOut] : [])]))];
  }

  /**
   * Add one pass's tokens. `captured` holds (B, T, C) tensors for `points`; `valid(b, t)` excludes
   * padding. The tensors are not disposed here.
   */
  async observe(captured: Map<string, Tensor>, valid?: (b: number, t: number) => boolean): Promise<void> {
    const host = new Map<string, Float32Array>();
    const read = async (p: string) => {
      if (!host.has(p)) {
        const t = captured.get(p);
        if (!t) throw new Error(`similarity: point ${p} was not captured`);
        host.set(p, await t.toF32());
      }
      return host.get(p)!;
    };
    for (const tg of this.targets) {
      const ref = captured.get(tg.before);
      if (!ref) throw new Error(`similarity: point ${tg.before} was not captured`);
      const [B, T, C] = ref.shape;
      const a = await read(tg.before), b = await read(tg.after);
      const add = tg.addOut ? await read(tg.addOut) : undefined;
      let s = 0, n = 0;
      for (let bi = 0; bi < B; bi++) for (let t = 0; t < T; t++) {
        if (valid && !valid(bi, t)) continue;
        const o = (bi * T + t) * C;
        let dot = 0, na = 0, nb = 0;
        for (let c = 0; c < C; c++) {
          const x = a[o + c], y = add ? a[o + c] + add[o + c] : b[o + c];
          dot += x * y; na += x * x; nb += y * y;
        }
        s += na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 1;
        n++;
      }
      this.sum.set(tg.name, (this.sum.get(tg.name) ?? 0) + s);
      this.count.set(tg.name, (this.count.get(tg.name) ?? 0) + n);
    }
  }

  /** Mean cosine similarity of a target over every observed token (NaN before any observation). */
  mean(name: string): number {
    return (this.sum.get(name) ?? NaN) / (this.count.get(name) ?? 0);
  }
}

/**
 * The targets to skip: candidates ranked most-skippable first, taken while their FLOPs stay within
 * `fraction` of `totalFlops` (a target that would overshoot is passed over for smaller ones after it).
 */
export function chooseWithin(ranked: SkipTarget[], fraction: number, totalFlops: number, flopsOf: (t: SkipTarget) => number): SkipTarget[] {
  const budget = fraction * totalFlops * (1 + 1e-9);
  const out: SkipTarget[] = [];
  let used = 0;
  for (const t of ranked) {
    const f = flopsOf(t);
    if (used + f <= budget) { out.push(t); used += f; }
  }
  return out;
}

/**
 * Fractions of the dense sublayer FLOPs (norms included, embedding and head excluded) a run skipped,
 * by family and overall, and the extra FLOPs a policy added (logit-lens checks) as a fraction of the same.
 */
export interface SkippedFraction { ffn: number; attn: number; all: number; overhead: number }

/**
 * Adds up, over the passes of a run, the sublayer FLOPs a dense model would have spent and the FLOPs
 * that were skipped. Attention sublayers after an early exit still write their cache: their K/V
 * projections count as spent. Extra work a policy adds (logit-lens checks) counts as overhead.
 */
export class SkipMeter {
  private readonly subs: SkipTarget[];
  private readonly kvFlops = new Map<string, number>();
  private readonly dense = { ffn: 0, attn: 0 };
  private readonly skipped = { ffn: 0, attn: 0 };
  overheadFlops = 0;

  constructor(private readonly spec: ModelSpec, ctxLen: number) {
    this.subs = sublayerTargets(spec, ctxLen);
    spec.layers.forEach((layer, i) => {
      const names = sublayerNames(layer);
      layer.sublayers.forEach((sub, j) => {
        if (sub.kind === 'attn') this.kvFlops.set(`layers.${i}.${names[j]}`, 2 * 2 * spec.dModel * sub.kvHeads * sub.headDim);
      });
    });
  }

  /** One forward pass over `tokens` positions; `cached` when it wrote a KV cache; `moeTopK` when overridden. */
  record(r: Pick<ForwardResult, 'skipped' | 'exitLayer'>, tokens: number, opts: { cached: boolean; moeTopK?: number }): void {
    const skipped = new Set(r.skipped);
    for (const s of this.subs) {
      const fam = s.kind === 'attn' ? 'attn' : 'ffn';
      const f = s.flops[fam] * tokens;
      this.dense[fam] += f;
      if (skipped.has(s.name)) {
        const refill = s.kind === 'attn' && opts.cached && s.layer >= r.exitLayer ? this.kvFlops.get(s.name)! * tokens : 0;
        this.skipped[fam] += f - refill;
      } else if (s.kind === 'moe' && opts.moeTopK !== undefined) {
        const sub = this.spec.layers[s.layer].sublayers[s.index];
        if (sub.kind === 'moe') {
          const brick = brickOf(sub);
          this.skipped.ffn += (brick.flopsPerToken(this.spec, sub, 0) - brick.flopsPerToken(this.spec, { ...sub, topK: opts.moeTopK }, 0)) * tokens;
        }
      }
    }
  }

  get fraction(): SkippedFraction {
    const frac = (s: number, d: number) => (d > 0 ? s / d : 0);
    return {
      ffn: frac(this.skipped.ffn, this.dense.ffn),
      attn: frac(this.skipped.attn, this.dense.attn),
      all: frac(this.skipped.ffn + this.skipped.attn, this.dense.ffn + this.dense.attn),
      overhead: frac(this.overheadFlops, this.dense.ffn + this.dense.attn),
    };
  }
}
