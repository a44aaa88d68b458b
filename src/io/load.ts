// Loading model folders on disk (Node): a Hugging Face folder or a native Brickwork folder, read through
// load-files.ts (the same code loads a model from bytes or URLs in a browser). Weights are read tensor by
// tensor with pread from the safetensors file or shards, never the whole file at once.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointError } from '../util/errors.ts';
import { openTensors } from './safetensors.ts';
import { folderFiles } from './files.ts';
import { assembleModel, readSpec, type LoadedModel, type LoadOptions, type ModelSource } from './load-files.ts';

export { NATIVE_FILE, NATIVE_FORMAT, NATIVE_VERSION, type LoadedModel, type LoadOptions, type ModelSource } from './load-files.ts';

const NODE = { existsSync, readFileSync, join };

/** Read a folder's spec without loading weights (native brickwork.json or HF config.json). */
export function readModelSource(dir: string): ModelSource {
  if (!existsSync(dir)) throw new CheckpointError(dir, 'does not exist', 'pass --model with a folder holding config.json (Hugging Face) or brickwork.json (native)');
  if (!statSync(dir).isDirectory())
    throw new CheckpointError(dir, 'is not a model folder', 'pass --model with a folder holding config.json (Hugging Face) or brickwork.json (native)');
  return readSpec(folderFiles(dir, NODE));
}

/**
 * Load a model folder (HF or native) onto a backend.
 * @example
 *   const { model, tokenizer } = await loadModel('models/tiny-llama', { backend: await getBackend('cpu') });
 */
export async function loadModel(dir: string, opts: LoadOptions): Promise<LoadedModel> {
  const source = readModelSource(dir);
  return assembleModel(source, openTensors(dir), folderFiles(dir, NODE), opts);
}
