// Loading a model from its files (ModelFiles: a folder on disk, bytes in memory, or URLs): a Hugging Face
// model (config.json + safetensors + tokenizer.json) or a native Brickwork one (brickwork.json +
// model.safetensors with canonical names + tokenizer files). Weights are read once, fixed up (transposes,
// fused-qkv splits) and uploaded to the backend. No Node modules: folders are opened by load.ts.

import type { Backend } from '../tensor/tensor.ts';
import { Model, declareWeights } from '../model/assemble.ts';
import { validateSpec, type ModelSpec } from '../model/spec.ts';
import { CheckpointError, TensorMismatchError, UnsupportedModelError } from '../util/errors.ts';
import { HfConfig } from './hf/config.ts';
import { HF_FAMILIES, type WeightSource } from './hf/families.ts';
import { SafetensorsReader, closeNames, type TensorSource } from './safetensors-read.ts';
import { Tokenizer } from './tokenizer.ts';
import { fetchModelFiles, readJson, type FetchOptions, type ModelFiles } from './files.ts';
import { fromF32, type DType } from '../tensor/dtype.ts';

export const NATIVE_FILE = 'brickwork.json';
export const NATIVE_FORMAT = 'brickwork.checkpoint';
export const NATIVE_VERSION = 1;
const GENERATION_CONFIG = 'generation_config.json';

export interface ModelSource {
  kind: 'hf' | 'native';
  /** The folder (or URL) the model was read from. */
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
  /** Tensors of the checkpoint that no weight of the spec was read from (transformers warns of these too):
   *  often a sign that the config does not describe the weights. Buffers a family knows of are left out. */
  unusedTensors: string[];
}

export interface LoadOptions {
  backend: Backend;
  /** 'stored' (default): 16-bit matrices stay 16-bit where the backend computes with them packed;
   *  'f32': every weight is widened to f32 (training needs f32 weights). */
  weights?: 'stored' | 'f32';
}

const DAMAGED = 'the file is damaged; re-save the model';

/** Read a model's spec from its files without loading weights (native brickwork.json or HF config.json). */
export function readSpec(files: ModelFiles): ModelSource {
  const dir = files.location;
  if (files.has(NATIVE_FILE)) {
    const native = files.where(NATIVE_FILE);
    const j = readJson(files, NATIVE_FILE, DAMAGED) as { format?: unknown; version?: unknown; spec?: unknown };
    if (j?.format !== NATIVE_FORMAT) throw new CheckpointError(native, `field 'format': expected '${NATIVE_FORMAT}', found ${JSON.stringify(j?.format)}`, 'this is not a Brickwork checkpoint');
    if (j.version !== NATIVE_VERSION) throw new CheckpointError(native, `field 'version': this Brickwork reads version ${NATIVE_VERSION}, found ${JSON.stringify(j.version)}`, 'convert the checkpoint with a matching Brickwork version');
    return { kind: 'native', dir, spec: validateSpec(j.spec) };
  }
  const cfgFile = files.where('config.json');
  if (!files.has('config.json')) throw new CheckpointError(dir, 'has neither config.json nor brickwork.json', 'pass a Hugging Face model folder or a folder written by `brickwork convert`');
  const raw = readJson(files, 'config.json', DAMAGED);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CheckpointError(cfgFile, 'expected a JSON object', 're-save the config');
  const cfg = new HfConfig(raw as Record<string, unknown>, cfgFile);
  const type = cfg.str('model_type', '');
  const family = HF_FAMILIES[type];
  if (!family) throw new UnsupportedModelError(`${cfgFile}: model_type '${type || '(missing)'}' is not supported`, `supported model types: ${Object.keys(HF_FAMILIES).join(', ')}`);
  const spec = family.toSpec(cfg);
  // NOTE: as in transformers' generate, generation_config.json decides the stop and start tokens where it
  // names them (instruct models often list an end-of-turn token there only).
  if (files.has(GENERATION_CONFIG)) {
    const gen = readJson(files, GENERATION_CONFIG, DAMAGED);
    if (typeof gen !== 'object' || gen === null || Array.isArray(gen)) throw new CheckpointError(files.where(GENERATION_CONFIG), 'expected a JSON object', 're-save the generation config');
    const g = new HfConfig(gen as Record<string, unknown>, files.where(GENERATION_CONFIG));
    const eos = g.ids('eos_token_id'), bos = g.ids('bos_token_id');
    if (eos) spec.eosTokenIds = eos;
    if (bos?.length) spec.bosTokenId = bos[0];
  }
  return { kind: 'hf', dir, spec: validateSpec(spec), modelType: type };
}

/** Whether the checkpoint has this name (or it without the `transformer.`/`model.` prefix). */
const hasSource = (src: TensorSource, hf: string) => src.has(hf) || src.has(hf.replace(/^(transformer|model)\./, ''));

/** Fetch one HF tensor as f32 with the fix-up applied, checking its shape against `want`. */
/** Returns the f32 values and the dtype they were stored in. */
function readSourced(src: TensorSource, s: WeightSource, canonical: string, want: number[]): { data: Float32Array; dtype: DType; name: string } {
  let hf = s.hf;
  if (!src.has(hf) && s.fallback && hasSource(src, s.fallback.hf)) return readSourced(src, s.fallback, canonical, want);
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
  const full = src.info(hf);
  const E = s.expert !== undefined ? full.shape[0] : 1;
  if (s.expert !== undefined && (full.shape.length !== 3 || s.expert >= E))
    throw new TensorMismatchError(hf, `expected experts stacked as (E, rows, cols) with E > ${s.expert}, found [${full.shape.join(', ')}]`, 'the checkpoint does not match its config.json');
  const info = s.expert !== undefined ? { ...full, shape: full.shape.slice(1) } : full;
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
  if (s.expert !== undefined) {
    const n = data.length / E;
    data = data.slice(s.expert * n, (s.expert + 1) * n);
  }
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
  return { data, dtype: info.dtype, name: hf };
}

/**
 * A weight holding inf or NaN makes every output NaN, far from where it came from: refuse it at load,
 * naming the tensor. (A sum is finite exactly when every term is, barring overflow, which the scan
 * then settles.)
 */
function checkFinite(data: Float32Array, hf: string, canonical: string): void {
  let sum = 0;
  for (let i = 0; i < data.length; i++) sum += data[i];
  if (Number.isFinite(sum)) return;
  let bad = 0, first = -1;
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) { bad++; if (first < 0) first = i; }
  if (bad === 0) return;
  throw new TensorMismatchError(hf, `holds ${bad} value${bad === 1 ? '' : 's'} that are inf or NaN (the first at index ${first}: ${data[first]}), needed for ${canonical}`,
    'the checkpoint is damaged, or was narrowed to a dtype too small for its values (f16 holds at most 65504): re-save it from the original in f32 or bf16');
}

/**
 * Upload the weights of `tensors` (closed when done) and build the model; the tokenizer is read from
 * `files` when they hold a tokenizer.json.
 */
export function assembleModel(source: ModelSource, tensors: TensorSource, files: ModelFiles, opts: LoadOptions): LoadedModel {
  const family = source.modelType ? HF_FAMILIES[source.modelType] : undefined;
  const weights = new Map();
  const dtypes = new Map<DType, number>();
  const used = new Set<string>();
  let unusedTensors: string[];
  try {
    for (const d of declareWeights(source.spec)) {
      const s: WeightSource = family ? family.source(d.name) : { hf: d.name };
      const { data, dtype: dt, name } = readSourced(tensors, s, d.name, d.shape);
      used.add(name);
      checkFinite(data, name, d.name);
      dtypes.set(dt, (dtypes.get(dt) ?? 0) + data.length);
      // Matrices stay in their stored 16-bit dtype where the backend computes with them packed (WebGPU);
      // narrowing back is exact because the values came from that dtype.
      const packed = opts.weights !== 'f32' && (dt === 'f16' || dt === 'bf16') && d.shape.length === 2 && opts.backend.supports('matmul', dt) && opts.backend.supports('gather_rows', dt);
      weights.set(d.name, packed ? opts.backend.upload(fromF32(data, dt), d.shape, dt) : opts.backend.upload(data, d.shape, 'f32'));
    }
    // A tied head reads the embedding; a checkpoint may still store its copy of it.
    const tiedHead = source.spec.tiedEmbeddings ? /^lm_head\.weight$/ : undefined;
    unusedTensors = tensors.names().filter((n) => !used.has(n) && !family?.ignore?.test(n) && !tiedHead?.test(n));
  } finally {
    tensors.close();
  }
  const storedDtype = [...dtypes.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'f32';
  const model = new Model(source.spec, opts.backend, weights);
  const tokenizer = files.has('tokenizer.json') ? Tokenizer.fromFiles(files) : undefined;
  return { model, tokenizer, source, storedDtype, unusedTensors };
}

/**
 * Load a model from its files (weights in one model.safetensors) onto a backend.
 * @example
 *   const files = memoryFiles({ 'config.json': cfg, 'model.safetensors': bytes, 'tokenizer.json': tok });
 *   const { model, tokenizer } = await loadModelFromFiles(files, { backend: await getBackend('webgpu') });
 */
export async function loadModelFromFiles(files: ModelFiles, opts: LoadOptions): Promise<LoadedModel> {
  const source = readSpec(files);
  const tensors = SafetensorsReader.fromBytes(files.bytes('model.safetensors'), files.where('model.safetensors'));
  return assembleModel(source, tensors, files, opts);
}

/**
 * Load a model folder served over HTTP (see fetchModelFiles); in a browser, a URL relative to the page.
 * @example
 *   const { model, tokenizer } = await loadModelFromUrl('/models/tiny-llama/', { backend: await getBackend('webgpu') });
 */
export async function loadModelFromUrl(url: string | URL, opts: LoadOptions & FetchOptions): Promise<LoadedModel> {
  return loadModelFromFiles(await fetchModelFiles(url, opts), opts);
}
