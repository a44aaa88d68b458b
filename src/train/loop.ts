// The training loop: deterministic batches (a function of seed and step), gradients through the tape,
// AdamW under a warm-up + cosine schedule, validation every N steps, a JSONL log, and atomic
// checkpoints every N steps that `resume` continues from exactly (bit-identical on the CPU). A NaN or
// infinity stops the run naming the step and the first brick where it appeared; no checkpoint is
// written after it, so the last good one stays intact.

import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ForwardOptions, Model } from '../model/assemble.ts';
import { recoverDirAtomic, writeFileAtomic } from '../io/atomic.ts';
import { NonFiniteError, TrainingError, UsageError } from '../util/errors.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { trainBatch, valBatches, type TokenData } from './data.ts';
import { gradients, languageModelLoss, type Batch } from './loss.ts';
import { AdamW, type BrickKind } from './optimizer.ts';
import { warmupCosine } from './schedule.ts';
import { loadOptimizerState, readTrainerState, saveCheckpoint } from './checkpoint.ts';

export interface TrainOptions {
  steps: number;
  /** Rows per batch (B) and tokens per row (T). */
  batch: number;
  seq: number;
  seed: number;
  /** Peak learning rate; warm-up steps; floor of the cosine (default lr/10); 'constant' keeps lr after warm-up. */
  lr: number;
  warmup?: number;
  minLr?: number;
  schedule?: 'cosine' | 'constant';
  weightDecay?: number;
  decay?: 'all' | 'matrices';
  betas?: [number, number];
  eps?: number;
  clip?: number;
  blockLr?: Partial<Record<BrickKind, number>>;
  /** Weight of the MoE load-balancing loss (default 0.001 when the model has MoE sublayers, as HF Mixtral). */
  auxCoef?: number;
  /** Validate every N steps (0: only at the end) on `evalBatches` fixed batches (default 8). */
  evalEvery?: number;
  evalBatches?: number;
  /** Save a checkpoint every N steps (0: only at the end); needs `out`. */
  saveEvery?: number;
  /** Extra forward options per step (e.g. a MatFormer width chosen for the step); called with -1 for validation. */
  forwardAt?: (step: number) => Omit<ForwardOptions, 'auxLoss' | 'cache' | 'pos0' | 'logitRows'>;
}

/** One line of the JSONL log. */
export interface StepRecord {
  step: number;
  loss: number;
  ce: number;
  aux?: number;
  lr: number;
  gradNorm: number;
  tokens: number;
  tokensPerSecond: number;
  elapsedSeconds: number;
  valLoss?: number;
}

export interface TrainIo {
  /** Output folder: log.jsonl and checkpoint/ go here. */
  out?: string;
  /** Continue from `<out>/checkpoint` (the model must have been loaded from it). */
  resume?: boolean;
  /** Folder whose tokenizer files are copied into checkpoints. */
  tokenizerDir?: string;
  /** Extra run description stored in trainer.json (e.g. the data files). */
  describe?: Record<string, unknown>;
  onStep?: (r: StepRecord) => void | Promise<void>;
  /** Called before each step's gradients (tests use it to inject faults). */
  beforeStep?: (step: number) => void | Promise<void>;
}

export interface TrainResult {
  /** Steps completed in total (including those before a resume). */
  steps: number;
  records: StepRecord[];
  finalValLoss?: number;
}

export const CHECKPOINT_DIR = 'checkpoint';
export const LOG_FILE = 'log.jsonl';

/** Mean cross-entropy over the fixed validation batches. */
export async function evaluate(model: Model, batches: Batch[], forward?: TrainOptions['forwardAt']): Promise<number> {
  let total = 0, n = 0;
  for (const b of batches) {
    const { loss, ce } = await languageModelLoss(model, b, { forward: forward?.(-1) });
    const v = (await ce.toF32())[0];
    loss.dispose(); ce.dispose();
    const scored = b.targets.reduce((k, t) => k + (t >= 0 ? 1 : 0), 0);
    total += v * scored; n += scored;
  }
  return total / n;
}

/** The brick a canonical weight or point name belongs to: `layers.3.ffn.down.weight` → `layers.3.ffn`. */
export function brickOfName(name: string): string {
  const m = /^(layers\.\d+\.[^.]+)/.exec(name);
  if (m) return m[1];
  return name.split('.')[0];
}

/** Where a non-finite value first appears: activations in forward order, then gradients. */
async function locateNonFinite(model: Model, batch: Batch, grads?: Map<string, Tensor>): Promise<string> {
  const finite = async (t: Tensor) => (await t.toF32()).every(Number.isFinite);
  const { captured, logits } = await model.forward(batch.ids, batch.B, batch.T, { capture: ['embed.out', 'layers.*.*.out', 'layers.*.resid.post', 'logits'] });
  try {
    for (const [name, t] of captured) if (!(await finite(t))) return brickOfName(name);
  } finally {
    for (const t of captured.values()) t.dispose();
    logits.dispose();
  }
  for (const [name, g] of grads ?? []) if (!(await finite(g))) return brickOfName(name);
  return 'the loss';
}

function checkOptions(o: TrainOptions, model: Model): void {
  const pos = (k: keyof TrainOptions) => {
    const v = o[k] as number;
    if (!(Number.isInteger(v) && v >= 1)) throw new UsageError(`train: ${k} must be an integer >= 1, found ${v}`);
  };
  pos('steps'); pos('batch'); pos('seq');
  if (o.seq > model.spec.maxContext) throw new UsageError(`train: sequence length ${o.seq} exceeds the model's context of ${model.spec.maxContext} positions`, `use --seq ${model.spec.maxContext} or less`);
  if (!(o.lr > 0 && Number.isFinite(o.lr))) throw new UsageError(`train: learning rate ${o.lr} must be a finite number > 0`, 'e.g. --lr 3e-4');
  for (const w of model.weights.values()) if (w.dtype !== 'f32') throw new UsageError(`train: the model's weights are stored as ${w.dtype}`, 'training needs f32 weights (load with --device cpu, or convert to f32)');
}

/**
 * Train `model` in place on `data`.
 * @example
 *   const data = splitTokens(tokenizer.encode(text));
 *   const { records } = await train(model, data, { steps: 200, batch: 8, seq: 128, seed: 1, lr: 1e-3 }, { out: 'runs/a' });
 */
export async function train(model: Model, data: TokenData, o: TrainOptions, io: TrainIo = {}): Promise<TrainResult> {
  checkOptions(o, model);
  const hasMoe = model.spec.layers.some((l) => l.sublayers.some((s) => s.kind === 'moe'));
  const auxCoef = hasMoe ? (o.auxCoef ?? 0.001) : 0;
  const opt = new AdamW(model, { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weightDecay, decay: o.decay, clip: o.clip, blockLr: o.blockLr });
  const lrAt = warmupCosine({ lr: o.lr, warmup: o.warmup ?? 0, total: o.steps, minLr: o.minLr, kind: o.schedule });
  const val = valBatches(data.val, o.batch, o.seq, o.evalBatches ?? 8);
  trainBatch(data.train, o.seed, 0, 1, o.seq); // fails early, with the message, when the data is too short
  const ckpt = io.out ? join(io.out, CHECKPOINT_DIR) : undefined;
  const logFile = io.out ? join(io.out, LOG_FILE) : undefined;
  if (io.out) mkdirSync(io.out, { recursive: true });
  if (ckpt) recoverDirAtomic(ckpt); // what killed saves left behind

  let start = 0, elapsed0 = 0;
  if (io.resume) {
    if (!ckpt || !existsSync(ckpt)) throw new UsageError(`train: nothing to resume: ${ckpt ?? '(no --out)'} does not exist`, 'run without --resume first');
    const state = readTrainerState(ckpt);
    start = state.step;
    elapsed0 = state.elapsedSeconds ?? 0;
    if (start >= o.steps) throw new UsageError(`train: the run in ${io.out} is already at step ${start}, and ${o.steps} steps were asked for`, `pass --steps above ${start} to train on`);
    loadOptimizerState(ckpt, opt);
    // The log keeps the lines of the steps the checkpoint includes, so it reads as one run.
    if (logFile && existsSync(logFile)) {
      const kept = readFileSync(logFile, 'utf8').split('\n').filter((line) => {
        try { return (JSON.parse(line) as StepRecord).step <= start; } catch { return false; }
      });
      writeFileAtomic(logFile, kept.map((l) => l + '\n').join(''));
    }
  } else if (logFile) writeFileAtomic(logFile, '');

  const hint = ckpt ? `the last checkpoint saved before this step (${ckpt}) is intact: train on from its weights with a lower --lr or a --clip (--model ${ckpt} --out NEW), or check the data` : undefined;
  const save = async (step: number, elapsedSeconds: number) => {
    if (!ckpt) return;
    try {
      await saveCheckpoint(ckpt, model, opt, { step, options: { ...o, forwardAt: undefined, ...io.describe }, elapsedSeconds }, io.tokenizerDir);
    } catch (e) {
      // Saving refuses non-finite weights: an update that overflowed them stops the run here, unsaved.
      if (e instanceof NonFiniteError && e.weight) throw new TrainingError(step, brickOfName(e.weight), `weight '${e.weight}' holds a non-finite value after the update`, hint);
      throw e;
    }
  };

  const records: StepRecord[] = [];
  const t0 = performance.now() - elapsed0 * 1000;
  let finalValLoss: number | undefined;
  for (let step = start; step < o.steps; step++) {
    await io.beforeStep?.(step);
    const ts = performance.now();
    const batch = trainBatch(data.train, o.seed, step, o.batch, o.seq);
    const fwd = o.forwardAt?.(step);
    const r = await gradients(model, batch, { auxCoef, forward: fwd });
    if (!Number.isFinite(r.loss)) {
      const where = await locateNonFinite(model, batch, r.grads);
      for (const g of r.grads.values()) g.dispose();
      throw new TrainingError(step + 1, where, `the loss is ${r.loss}`, hint);
    }
    const norm = await opt.gradNorm(r.grads);
    if (!Number.isFinite(norm)) {
      const where = await locateNonFinite(model, batch, r.grads);
      for (const g of r.grads.values()) g.dispose();
      throw new TrainingError(step + 1, where, `the gradient norm is ${norm}`, hint);
    }
    const lr = lrAt(step);
    opt.apply(r.grads, lr, norm);
    const done = step + 1;
    const seconds = (performance.now() - ts) / 1000;
    const rec: StepRecord = {
      step: done, loss: r.loss, ce: r.ce, ...(r.aux !== undefined ? { aux: r.aux } : {}), lr, gradNorm: norm,
      tokens: done * o.batch * o.seq, tokensPerSecond: (o.batch * o.seq) / seconds, elapsedSeconds: (performance.now() - t0) / 1000,
    };
    const last = done === o.steps;
    if ((o.evalEvery && done % o.evalEvery === 0) || last) {
      rec.valLoss = await evaluate(model, val, o.forwardAt);
      if (!Number.isFinite(rec.valLoss)) throw new TrainingError(done, await locateNonFinite(model, val[0]), `the validation loss is ${rec.valLoss}`, hint);
      if (last) finalValLoss = rec.valLoss;
    }
    records.push(rec);
    if (logFile) appendFileSync(logFile, JSON.stringify(rec) + '\n');
    if ((o.saveEvery && done % o.saveEvery === 0) || last) await save(done, rec.elapsedSeconds);
    await io.onStep?.(rec);
  }
  return { steps: o.steps, records, finalValLoss };
}
