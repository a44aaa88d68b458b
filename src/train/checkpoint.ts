// Training checkpoints: one folder that is a loadable native model (brickwork.json, model.safetensors,
// tokenizer files) plus optimizer.safetensors (the AdamW moments, exact f32) and trainer.json (step,
// run options). Saved atomically as a whole: a killed save leaves the previous checkpoint intact.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { saveNative } from '../io/native.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../io/safetensors.ts';
import type { Model } from '../model/assemble.ts';
import type { AdamW } from './optimizer.ts';
import { CheckpointError } from '../util/errors.ts';

export const TRAINER_FILE = 'trainer.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const TRAINER_FORMAT = 'brickwork.trainer';

/** What trainer.json holds. */
export interface TrainerState {
  format: typeof TRAINER_FORMAT;
  version: 1;
  /** Steps completed. */
  step: number;
  /** The run's options (so --resume needs no flags). */
  options: Record<string, unknown>;
  /** Training time so far, so a resumed run's log continues the clock. */
  elapsedSeconds?: number;
}

/** Save model + optimizer + trainer state into `dir` atomically. */
export async function saveCheckpoint(dir: string, model: Model, opt: AdamW, state: Omit<TrainerState, 'format' | 'version'>, tokenizerDir?: string): Promise<void> {
  const moments: TensorToWrite[] = [];
  for (const [name, t] of opt.state) moments.push({ name, dtype: 'f32' as const, shape: [...t.shape], data: (await t.toF32()) });
  await saveNative(model, dir, {
    tokenizerDir,
    source: { trainedSteps: state.step },
    extra: (tmp) => {
      writeSafetensors(join(tmp, OPTIMIZER_FILE), moments, { steps: String(opt.steps) });
      writeFileAtomic(join(tmp, TRAINER_FILE), JSON.stringify({ format: TRAINER_FORMAT, version: 1, ...state }, null, 2) + '\n');
    },
  });
}

/** Whether `dir` holds a training checkpoint. */
export const isCheckpoint = (dir: string) => existsSync(join(dir, TRAINER_FILE));

/** The trainer state of a checkpoint folder, checked. */
export function readTrainerState(dir: string): TrainerState {
  const file = join(dir, TRAINER_FILE);
  let j: Partial<TrainerState>;
  try {
    j = JSON.parse(readFileSync(file, 'utf8')) as Partial<TrainerState>;
  } catch (e) {
    throw new CheckpointError(file, `cannot be read: ${(e as Error).message}`, 'the checkpoint is damaged; start again without --resume');
  }
  if (j.format !== TRAINER_FORMAT || j.version !== 1 || !Number.isInteger(j.step) || typeof j.options !== 'object' || j.options === null || Array.isArray(j.options))
    throw new CheckpointError(file, `expected {format: '${TRAINER_FORMAT}', version: 1, step, options}`, 'the checkpoint is damaged; start again without --resume');
  return j as TrainerState;
}

/** Load the optimizer moments of a checkpoint into `opt` (its model must already hold the checkpoint's weights). */
export function loadOptimizerState(dir: string, opt: AdamW): void {
  const f = SafetensorsFile.open(join(dir, OPTIMIZER_FILE));
  try {
    for (const name of f.names()) {
      const w = opt.model.weights.get(name);
      if (!w) throw new CheckpointError(join(dir, OPTIMIZER_FILE), `has moments for '${name}', which the model does not have`, 'the checkpoint does not belong to this model');
      const info = f.info(name);
      if (info.shape.join() !== `2,${w.size}`) throw new CheckpointError(join(dir, OPTIMIZER_FILE), `moments of '${name}': expected [2, ${w.size}], found [${info.shape.join(', ')}]`, 'the checkpoint is damaged');
      opt.state.get(name)?.dispose();
      opt.state.set(name, opt.model.backend.upload(f.readF32(name), [2, w.size], 'f32'));
    }
    opt.steps = Number(f.metadata.steps ?? 0);
  } finally {
    f.close();
  }
}
