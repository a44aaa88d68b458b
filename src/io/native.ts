// The native Brickwork checkpoint: a folder with brickwork.json (format, version, spec), model.safetensors
// holding every weight under its canonical name, and the tokenizer files. It can hold any ragged spec,
// and is written atomically (built in a temporary folder, then renamed into place).

import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Model } from '../model/assemble.ts';
import { declareWeights } from '../model/assemble.ts';
import { fromF32, toF32, type DType } from '../tensor/dtype.ts';
import { writeDirAtomic, writeFileAtomic } from './atomic.ts';
import { NATIVE_FILE, NATIVE_FORMAT, NATIVE_VERSION } from './load.ts';
import { writeSafetensors, type TensorToWrite } from './safetensors.ts';
import { NonFiniteError, UsageError } from '../util/errors.ts';

/** Files copied from the source folder when present. */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

export interface SaveOptions {
  /** Storage dtype of float weights (default f32). f16/bf16 round to nearest even. */
  dtype?: 'f32' | 'f16' | 'bf16';
  /** Folder to copy tokenizer files from. */
  tokenizerDir?: string;
  /** Free-form provenance stored in brickwork.json. */
  source?: Record<string, unknown>;
  /** Writes more files into the folder before it is swapped in (same atomic save: training state). */
  extra?: (tmpDir: string) => void | Promise<void>;
}

/**
 * Refuse what could not be loaded back: a weight holding inf or NaN (NonFiniteError naming it), or a
 * narrowing that turns finite values into infinities (f16 holds at most 65504). `narrowed`: the stored
 * values widened again, for 16-bit dtypes.
 */
function checkStorable(wide: Float32Array, narrowed: Float32Array | undefined, name: string, dtype: DType): void {
  let bad = 0, worst = 0;
  for (let i = 0; i < wide.length; i++) {
    if (!Number.isFinite(wide[i])) throw new NonFiniteError(`weight '${name}' holds a non-finite value (index ${i}: ${wide[i]}), which a checkpoint cannot hold`, name);
    if (!narrowed || Number.isFinite(narrowed[i])) continue;
    bad++;
    if (Math.abs(wide[i]) > Math.abs(worst)) worst = wide[i];
  }
  if (bad) throw new UsageError(`weight '${name}': ${bad} value${bad === 1 ? '' : 's'} (up to ${worst}) are beyond the range of ${dtype} and would be stored as infinity`,
    dtype === 'f16' ? 'save in bf16 (the range of f32) or f32' : 'save in f32');
}

/**
 * Save a model as a native checkpoint folder (replacing `dir` atomically if it exists).
 * @example
 *   await saveNative(model, 'out/tiny', { tokenizerDir: 'models/tiny-llama', dtype: 'bf16' });
 */
export async function saveNative(model: Model, dir: string, opts: SaveOptions = {}): Promise<void> {
  const dtype: DType = opts.dtype ?? 'f32';
  if (!['f32', 'f16', 'bf16'].includes(dtype)) throw new UsageError(`unknown storage dtype '${dtype}'`, 'use f32, f16 or bf16');
  const tensors: TensorToWrite[] = [];
  for (const d of declareWeights(model.spec)) {
    const data = (await model.backend.read(model.weights.get(d.name)!)) as Float32Array;
    const stored = dtype === 'f32' ? data : fromF32(data, dtype);
    checkStorable(data, dtype === 'f32' ? undefined : toF32(stored as Uint16Array, dtype), d.name, dtype);
    tensors.push({ name: d.name, dtype, shape: d.shape, data: stored });
  }
  await writeDirAtomic(dir, async (tmp) => {
    writeSafetensors(join(tmp, 'model.safetensors'), tensors, { format: 'pt', producer: 'brickwork' });
    const meta = { format: NATIVE_FORMAT, version: NATIVE_VERSION, spec: model.spec, ...(opts.source ? { source: opts.source } : {}) };
    writeFileAtomic(join(tmp, NATIVE_FILE), JSON.stringify(meta, null, 2) + '\n');
    if (opts.tokenizerDir) for (const f of TOKENIZER_FILES) if (existsSync(join(opts.tokenizerDir, f))) copyFileSync(join(opts.tokenizerDir, f), join(tmp, f));
    await opts.extra?.(tmp);
  });
}
