// The language-model loss and its gradients: mean cross-entropy of next-token predictions (fused
// with log-sum-exp in one op), plus the MoE load-balancing loss times a coefficient when asked.
// `gradients` records the forward pass on a Tape and returns d loss / d weight by canonical name.

import * as op from '../tensor/api.ts';
import { Tape } from '../tensor/autograd.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { ForwardOptions, Model } from '../model/assemble.ts';
import { UsageError } from '../util/errors.ts';

/** B rows of T input ids and their T targets each (row-major); a target < 0 is not scored. */
export interface Batch {
  ids: Int32Array;
  targets: Int32Array;
  B: number;
  T: number;
}

export interface LossOptions {
  /** Weight of the MoE load-balancing loss (0 or absent: not computed). */
  auxCoef?: number;
  /** Passed to the forward pass (e.g. a gate that skips sublayers, or hooks). */
  forward?: Omit<ForwardOptions, 'auxLoss' | 'cache' | 'pos0' | 'logitRows'>;
}

export interface LossTensors {
  /** The scalar that is differentiated: ce + auxCoef · aux. */
  loss: Tensor;
  /** Mean cross-entropy over scored targets (a scalar). */
  ce: Tensor;
  /** The MoE load-balancing loss, when asked and the model has MoE sublayers. */
  aux?: Tensor;
}

/**
 * The loss of a batch as tensors (record it on a Tape to differentiate it).
 * @example
 *   const { loss } = await languageModelLoss(model, { ids, targets, B: 2, T: 32 });
 */
export async function languageModelLoss(model: Model, batch: Batch, opts: LossOptions = {}): Promise<LossTensors> {
  const { ids, targets, B, T } = batch;
  if (ids.length !== B * T || targets.length !== B * T) throw new UsageError(`loss: expected ${B * T} ids and targets for B=${B}, T=${T}, found ${ids.length} and ${targets.length}`, 'pass B rows of T tokens each');
  if (T > model.spec.maxContext) throw new UsageError(`loss: sequence length ${T} exceeds the model's context of ${model.spec.maxContext}`, `use --seq ${model.spec.maxContext} or less`);
  const scored = targets.reduce((n, t) => n + (t >= 0 ? 1 : 0), 0);
  if (scored === 0) throw new UsageError('loss: every target is ignored (< 0); nothing to score', 'check the data windows');
  const aux = (opts.auxCoef ?? 0) > 0;
  const { logits, auxLoss } = await model.forward(ids, B, T, { ...opts.forward, auxLoss: aux });
  const be = model.backend;
  const V = model.spec.vocabSize;
  const tg = be.upload(targets, [B * T], 'i32');
  const rows = op.crossEntropy(logits.reshape([B * T, V]), tg);
  const total = op.sum(rows);
  const ce = op.scale(total, 1 / scored);
  op.dispose(tg, rows, total, logits);
  if (!aux || !auxLoss) {
    auxLoss?.dispose();
    return { loss: ce, ce };
  }
  const weighted = op.scale(auxLoss, opts.auxCoef!);
  const loss = op.add(ce, weighted);
  weighted.dispose();
  return { loss, ce, aux: auxLoss };
}

export interface GradientResult {
  loss: number;
  ce: number;
  aux?: number;
  /** d loss / d weight for every weight in `params` the loss depends on, by canonical name. */
  grads: Map<string, Tensor>;
}

/**
 * Loss and gradients of a batch with respect to the model's weights (all, or those `params` names).
 * @example
 *   const { loss, grads } = await gradients(model, batch);
 *   grads.get('layers.0.attn.q.weight'); // same shape as the weight
 */
export async function gradients(model: Model, batch: Batch, opts: LossOptions & { params?: string[] } = {}): Promise<GradientResult> {
  const names = opts.params ?? [...model.weights.keys()];
  const byTensor = new Map<Tensor, string>();
  for (const n of names) {
    const w = model.weights.get(n);
    if (!w) throw new UsageError(`gradients: the model has no weight '${n}'`, 'use canonical weight names (brickwork inspect lists them)');
    if (w.dtype !== 'f32') throw new UsageError(`gradients: weight '${n}' is stored as ${w.dtype}`, 'training needs f32 weights; load the model with f32 weights');
    byTensor.set(w, n);
  }
  const tape = new Tape(byTensor.keys());
  const t = await tape.run(() => languageModelLoss(model, batch, opts));
  // NOTE: without an auxiliary loss, loss and ce are one tensor: one read-back per step, not two.
  const [loss, ce, aux] = await Promise.all([t.loss.toF32(), t.ce === t.loss ? undefined : t.ce.toF32(), t.aux?.toF32()]);
  const g = tape.backward(t.loss);
  op.dispose(t.loss, t.ce, t.aux);
  const grads = new Map<string, Tensor>();
  for (const [w, grad] of g) grads.set(byTensor.get(w)!, grad);
  return { loss: loss[0], ce: (ce ?? loss)[0], aux: aux?.[0], grads };
}
