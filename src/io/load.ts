// Loading models: a Hugging Face folder (config.json + safetensors + tokenizer.json) or a native
// Brickwork folder (brickwork.json + model.safetensors with canonical names + tokenizer files).
// Weights are read once, fixed up (transposes, fused-qkv splits) and uploaded to the backend.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend } from '../tensor/tensor.ts';
import { Model, declareWeights } from '../model/assemble.ts';
import { validateSpec, type ModelSpec } from '../model/spec.ts';
import { CheckpointError, TensorMismatchError, UnsupportedModelError } from '../util/errors.ts';
import { HfConfig } from './hf/config.ts';
import { HF_FAMILIES, type WeightSource } from './hf/families.ts';
import { openTensors, closeNames, type TensorSource } from './safetensors.ts';
import { Tokenizer } from './tokenizer.ts';
import { fromF32, type DType } from '../tensor/dtype.ts';

export const NATIVE_FILE = 'brickwork.json';
export const NATIVE_FORMAT = 'brickwork.checkpoint';
export const NATIVE_VERSION = 1;

export interface ModelSource {
  kind: 'hf' | 'native';
  dir: string;
  spec: ModelSpec;
  /** model_type for HF folders. */
  modelType?: string;
}

export interface LoadedModel {
  model: Model;
  /** Present when the folder has a tokenizer.json. */
  tokenizer?: Tokenizer;
  source: ModelSource;
  /** The dtype the weights were stored in (most common one). */
  storedDtype: DType;
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new CheckpointError(file, `is not valid JSON (${(e as Error).message})`, 'the file is damaged; re-save the model');
  }
}

/** Read a folder's spec without loading weights (native brickwork.json or HF config.json). */
export function readModelSource(dir: string): ModelSource {
  if (!existsSync(dir)) throw new CheckpointError(dir, 'does not exist', 'pass --model with a folder holding config.json (Hugging Face) or brickwork.json (native)');
  if (!statSync(dir).isDirectory())
    throw new CheckpointError(dir, 'is not a model folder', 'pass --model with a folder holding config.json (Hugging Face) or brickwork.json (native)');
  const native = join(dir, NATIVE_FILE);
  if (existsSync(native)) {
    const j = readJson(native) as { format?: unknown; version?: unknown; spec?: unknown };
    if (j?.format !== NATIVE_FORMAT) throw new CheckpointError(native, `field 'format': expected '${NATIVE_FORMAT}', found ${JSON.stringify(j?.format)}`, 'this is not a Brickwork checkpoint');
    if (j.version !== NATIVE_VERSION) throw new CheckpointError(native, `field 'version': this Brickwork reads version ${NATIVE_VERSION}, found ${JSON.stringify(j.version)}`, 'convert the checkpoint with a matching Brickwork version');
    return { kind: 'native', dir, spec: validateSpec(j.spec) };
  }
  const cfgFile = join(dir, 'config.json');
  if (!existsSync(cfgFile)) throw new CheckpointError(dir, 'has neither config.json nor brickwork.json', 'pass a Hugging Face model folder or a folder written by `brickwork convert`');
  const raw = readJson(cfgFile);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CheckpointError(cfgFile, 'expected a JSON object', 're-save the config');
  const cfg = new HfConfig(raw as Record<string, unknown>, cfgFile);
  const type = cfg.str('model_type', '');
  const family = HF_FAMILIES[type];
  if (!family) throw new UnsupportedModelError(`${cfgFile}: model_type '${type || '(missing)'}' is not supported`, `supported model types: ${Object.keys(HF_FAMILIES).join(', ')}`);
  return { kind: 'hf', dir, spec: validateSpec(family.toSpec(cfg)), modelType: type };
}

/** Fetch one HF tensor as f32 with the fix-up applied, checking its shape against `want`. */
/** Returns the f32 values and the dtype they were stored in. */
function readSourced(src: TensorSource, s: WeightSource, canonical: string, want: number[]): { data: Float32Array; dtype: DType } {
  let hf = s.hf;
  if (!src.has(hf)) {
    // Some checkpoints drop the `transformer.`/`model.` prefix.
    const alt = hf.replace(/^(transformer|model)\./, '');
    if (src.has(alt)) hf = alt;
    else {
      const near = closeNames(hf, src.names());
      throw new TensorMismatchError(hf, `missing from the checkpoint (needed for ${canonical})`,
        near.length ? `similar names in the checkpoint: ${near.join(', ')}` : 'the checkpoint does not match its config.json');
    }
  }
  const info = src.info(hf);
  let rows = info.shape[0], cols = info.shape.length === 2 ? info.shape[1] : 1;
  if (s.transpose) [rows, cols] = [cols, rows];
  const parts = s.split?.parts ?? 1;
  const expect = want.length === 2 ? [want[0] * parts, want[1]] : [want[0] * parts];
  const got = info.shape.length === 2 ? [rows, cols] : [rows];
  if (got.join() !== expect.join()) {
    const what = s.transpose || s.split ? ` (after ${[s.transpose && 'transposing', s.split && `splitting into ${parts}`].filter(Boolean).join(' and ')})` : '';
    throw new TensorMismatchError(hf, `expected shape [${expect.join(', ')}]${what}, found [${info.shape.join(', ')}]`, 'the checkpoint does not match its config.json');
  }
  let data = src.readF32(hf);
  if (s.transpose && info.shape.length === 2) {
    const [r, c] = info.shape;
    const t = new Float32Array(data.length);
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) t[j * r + i] = data[i * c + j];
    data = t;
  }
  if (s.split) {
    const n = data.length / parts;
    data = data.slice(s.split.index * n, (s.split.index + 1) * n);
  }
  return { data, dtype: info.dtype };
}

export interface LoadOptions {
  backend: Backend;
}

/**
 * Load a model folder (HF or native) onto a backend.
 * @example
 *   const { model, tokenizer } = await loadModel('models/tiny-llama', { backend: await getBackend('cpu') });
 */
export async function loadModel(dir: string, opts: LoadOptions): Promise<LoadedModel> {
  const source = readModelSource(dir);
  const family = source.modelType ? HF_FAMILIES[source.modelType] : undefined;
  const src = openTensors(dir);
  const weights = new Map();
  const dtypes = new Map<DType, number>();
  try {
    for (const d of declareWeights(source.spec)) {
      const s: WeightSource = family ? family.source(d.name) : { hf: d.name };
      const { data, dtype: dt } = readSourced(src, s, d.name, d.shape);
      dtypes.set(dt, (dtypes.get(dt) ?? 0) + data.length);
      // Matrices stay in their stored 16-bit dtype where the backend computes with them packed (WebGPU);
      // narrowing back is exact because the values came from that dtype.
      const packed = (dt === 'f16' || dt === 'bf16') && d.shape.length === 2 && opts.backend.supports('matmul', dt) && opts.backend.supports('gather_rows', dt);
      weights.set(d.name, packed ? opts.backend.upload(fromF32(data, dt), d.shape, dt) : opts.backend.upload(data, d.shape, 'f32'));
    }
  } finally {
    src.close();
  }
  const storedDtype = [...dtypes.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'f32';
  const model = new Model(source.spec, opts.backend, weights);
  const tokenizer = existsSync(join(dir, 'tokenizer.json')) ? Tokenizer.fromDir(dir) : undefined;
  return { model, tokenizer, source, storedDtype };
}
