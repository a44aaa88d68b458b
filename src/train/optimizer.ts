// AdamW (decoupled weight decay, as torch.optim.AdamW) over a model's weights, with parameter groups
// (per-weight learning-rate multipliers and decay), blockwise learning rates by brick kind, and
// gradient clipping by global norm. Moments live on the model's backend as one (2, n) tensor per
// weight and every update is two in-place ops (adam_moments, adam_apply), so nothing leaves the GPU.

import * as op from '../tensor/api.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { Model } from '../model/assemble.ts';
import { UsageError } from '../util/errors.ts';

/** The kinds blockwise learning rates address (see `brickKindOf`). */
export type BrickKind = 'embed' | 'attn_qk' | 'attn_vo' | 'ffn' | 'norm';
export const BRICK_KINDS: readonly BrickKind[] = ['embed', 'attn_qk', 'attn_vo', 'ffn', 'norm'];

/**
 * The kind of brick a canonical weight belongs to: embeddings and the LM head; attention query/key
 * (with their biases and QK-norms); attention value/output; FFN and MoE (router included); norms.
 */
export function brickKindOf(name: string): BrickKind {
  if (/^(embed|pos_embed|lm_head)\./.test(name)) return 'embed';
  if (/(^|\.)(norm|out_norm|final_norm)\.(weight|bias)$/.test(name)) return 'norm';
  const a = /\.attn(_\d+)?\.([a-z_]+)\./.exec(name);
  if (a) return ['q', 'k', 'q_norm', 'k_norm'].includes(a[2]) ? 'attn_qk' : 'attn_vo';
  return 'ffn';
}

export interface AdamWOptions {
  /** Peak learning rate (a schedule may scale it per step). */
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  /** Which weights decay: every one (torch's default for a single group) or matrices only (not norms, biases). */
  decay?: 'all' | 'matrices';
  /** Learning-rate multipliers per brick kind (blockwise learning rates); 1 where absent. */
  blockLr?: Partial<Record<BrickKind, number>>;
  /** Clip the global gradient norm to this (0 or absent: no clipping). */
  clip?: number;
}

export interface StepReport {
  /** Global L2 norm of the gradients before clipping. */
  gradNorm: number;
  /** The learning rate the step used (before blockwise multipliers). */
  lr: number;
}

/**
 * @example
 *   const opt = new AdamW(model, { lr: 3e-4, weightDecay: 0.1, clip: 1, blockLr: { embed: 0.5 } });
 *   const { grads } = await gradients(model, batch);
 *   await opt.step(grads);
 */
export class AdamW {
  readonly opts: Required<Omit<AdamWOptions, 'blockLr'>> & { blockLr: Partial<Record<BrickKind, number>> };
  /** (2, n) = [m; v] per weight name, created on first use. */
  readonly state = new Map<string, Tensor>();
  /** Steps taken so far. */
  steps = 0;

  constructor(readonly model: Model, opts: AdamWOptions) {
    const given = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as AdamWOptions;
    const o = { betas: [0.9, 0.95] as [number, number], eps: 1e-8, weightDecay: 0.1, decay: 'matrices' as const, clip: 0, blockLr: {}, ...given };
    if (!(o.lr >= 0) || !Number.isFinite(o.lr)) throw new UsageError(`AdamW: learning rate ${o.lr} is not a finite number >= 0`, 'pass e.g. --lr 3e-4');
    for (const b of o.betas) if (!(b >= 0 && b < 1)) throw new UsageError(`AdamW: beta ${b} outside [0, 1)`, 'the usual betas are 0.9 and 0.95');
    for (const [k, v] of Object.entries(o.blockLr)) {
      if (!BRICK_KINDS.includes(k as BrickKind)) throw new UsageError(`AdamW: unknown brick kind '${k}' in blockwise learning rates`, `kinds: ${BRICK_KINDS.join(', ')}`);
      if (!(typeof v === 'number' && v >= 0 && Number.isFinite(v))) throw new UsageError(`AdamW: multiplier for '${k}' is ${v}`, 'multipliers are finite numbers >= 0');
    }
    this.opts = o;
  }

  private decays(name: string, w: Tensor): boolean {
    return this.opts.decay === 'all' || (w.shape.length >= 2 && brickKindOf(name) !== 'norm');
  }

  /** Global gradient norm (one read-back for all weights). */
  async gradNorm(grads: Map<string, Tensor>): Promise<number> {
    let acc: Tensor | undefined;
    for (const g of grads.values()) {
      const sq = op.mul(g, g);
      const s = op.sumTo(sq, []);
      sq.dispose();
      if (!acc) { acc = s; continue; }
      const next = op.add(acc, s);
      acc.dispose(); s.dispose();
      acc = next;
    }
    if (!acc) return 0;
    const v = (await acc.toF32())[0];
    acc.dispose();
    return Math.sqrt(v);
  }

  /** One AdamW step with these gradients (disposed afterwards) at learning rate `lr` (default: the peak). */
  async step(grads: Map<string, Tensor>, lr = this.opts.lr): Promise<StepReport> {
    const norm = await this.gradNorm(grads);
    if (!Number.isFinite(norm)) {
      for (const g of grads.values()) g.dispose();
      throw new UsageError(`AdamW: the gradient norm is ${norm}`, 'a NaN or infinity reached the gradients; lower the learning rate');
    }
    return this.apply(grads, lr, norm);
  }

  /** The update itself, given the global gradient norm (`gradNorm`) for clipping; disposes the gradients. */
  apply(grads: Map<string, Tensor>, lr: number, norm: number): StepReport {
    const { betas: [b1, b2], eps, weightDecay, clip } = this.opts;
    const gradScale = clip > 0 && norm > clip ? clip / (norm + 1e-6) : 1;
    this.steps++;
    const bc1 = 1 - b1 ** this.steps, bc2 = 1 - b2 ** this.steps;
    for (const [name, g] of grads) {
      const w = this.model.weights.get(name);
      if (!w) throw new UsageError(`AdamW: gradient for '${name}', which the model does not have`, 'pass gradients of this model');
      let st = this.state.get(name);
      if (!st) this.state.set(name, (st = this.model.backend.zeros([2, w.size], 'f32')));
      const wlr = lr * (this.opts.blockLr[brickKindOf(name)] ?? 1);
      op.adamMoments(st, g, { beta1: b1, beta2: b2, gradScale });
      op.adamApply(w, st, { lr: wlr, eps, weightDecay: this.decays(name, w) ? weightDecay : 0, bc1, bc2 });
      g.dispose();
    }
    return { gradNorm: norm, lr };
  }
}
