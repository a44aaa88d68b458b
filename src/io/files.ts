// The files of a model, by name, wherever they live: a folder on disk, bytes held in memory,
// or URLs fetched over HTTP (browsers, or Node's fetch). Loading reads a model only through ModelFiles,
// so the same code loads it in Node and in a browser. No Node modules here.

import { CheckpointError, UsageError } from '../util/errors.ts';

/** Read access to the files of one model folder (config.json, model.safetensors, tokenizer.json, …). */
export interface ModelFiles {
  /** The folder, URL or label the files come from. */
  readonly location: string;
  /** Where file `name` lives (a path or URL), for messages. */
  where(name: string): string;
  has(name: string): boolean;
  /** The file's bytes; CheckpointError if it is missing or cannot be read. */
  bytes(name: string): Uint8Array;
  /** The file as UTF-8 text; CheckpointError if it is missing or cannot be read. */
  text(name: string): string;
}

/** The files a load can use: the spec (native or HF), the weights, the tokenizer. */
export const MODEL_FILES = ['brickwork.json', 'config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];

/** Parse file `name` as JSON; CheckpointError naming the file (with `hint`) if it is not valid JSON. */
export function readJson(files: ModelFiles, name: string, hint: string): unknown {
  const text = files.text(name);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(files.where(name), `is not valid JSON (${(e as Error).message})`, hint);
  }
}

/** What reading a folder needs from Node (fs and path), passed in so that this module imports none. */
export interface NodeFs {
  existsSync(path: string): boolean;
  readFileSync(path: string): Uint8Array;
  join(...parts: string[]): string;
}

/** The files of folder `dir` on disk, read when asked for. */
export function folderFiles(dir: string, node: NodeFs): ModelFiles {
  const where = (name: string) => node.join(dir, name);
  const bytes = (name: string) => {
    try {
      return node.readFileSync(where(name));
    } catch (e) {
      throw new CheckpointError(where(name), `cannot be read: ${(e as Error).message}`, 'check the path and permissions');
    }
  };
  return { location: dir, where, has: (name) => node.existsSync(where(name)), bytes, text: (name) => new TextDecoder().decode(bytes(name)) };
}

/**
 * Files held in memory: name → bytes or text (e.g. from an `<input type=file>` or a zip). `location`
 * names them in messages.
 * @example
 *   const files = memoryFiles({ 'config.json': configText, 'model.safetensors': weightBytes }, 'upload');
 *   const { model } = await loadModelFromFiles(files, { backend });
 */
export function memoryFiles(contents: Record<string, Uint8Array | string>, location = '(memory)'): ModelFiles {
  const where = (name: string) => (location.endsWith('/') ? location + name : `${location}/${name}`);
  const get = (name: string) => {
    const v = Object.prototype.hasOwnProperty.call(contents, name) ? contents[name] : undefined;
    if (v === undefined) throw new CheckpointError(where(name), 'not found', `the model needs this file; add it to the files passed in (${Object.keys(contents).join(', ') || 'none given'})`);
    return v;
  };
  return {
    location,
    where,
    has: (name) => Object.prototype.hasOwnProperty.call(contents, name),
    bytes: (name) => {
      const v = get(name);
      return typeof v === 'string' ? new TextEncoder().encode(v) : v;
    },
    text: (name) => {
      const v = get(name);
      return typeof v === 'string' ? v : new TextDecoder().decode(v);
    },
  };
}

export interface FetchOptions {
  /** The fetch to use (default: globalThis.fetch). */
  fetch?: typeof globalThis.fetch;
}

/**
 * Fetch a model folder served over HTTP: every file of MODEL_FILES that exists under `url` (a 404 means
 * absent; model.safetensors is required). A relative URL is resolved against the page's address.
 * @example
 *   const files = await fetchModelFiles('/models/tiny-llama/');
 */
export async function fetchModelFiles(url: string | URL, opts: FetchOptions = {}): Promise<ModelFiles> {
  const doFetch = opts.fetch ?? globalThis.fetch;
  const page = (globalThis as { location?: { href?: string } }).location?.href;
  let base: URL;
  try {
    base = new URL(String(url), page);
  } catch {
    throw new UsageError(`'${url}' is not a URL`, page === undefined ? 'pass an absolute URL (http://host/path/to/model/)' : 'pass the URL of the model folder');
  }
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  const got = await Promise.all(MODEL_FILES.map(async (name): Promise<[string, Uint8Array] | undefined> => {
    const href = new URL(name, base).href;
    const fail = (why: string) => new CheckpointError(href, `could not be fetched (${why})`, 'check the URL, that the server is up, and that it lets this page read the file (CORS)');
    let res: Response;
    try {
      res = await doFetch(href);
    } catch (e) {
      throw fail((e as Error).message);
    }
    if (res.status === 404 || res.status === 410) {
      if (name !== 'model.safetensors') return undefined;
      throw new CheckpointError(href, `not found (HTTP ${res.status})`,
        'serve the whole model folder at this URL (sharded checkpoints load only from a folder on disk; `brickwork convert` writes one model.safetensors)');
    }
    if (!res.ok) throw fail(`HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`);
    try {
      return [name, new Uint8Array(await res.arrayBuffer())];
    } catch (e) {
      throw fail((e as Error).message);
    }
  }));
  return memoryFiles(Object.fromEntries(got.filter((x) => x !== undefined)), base.href);
}
