// Shared pieces of the CLI commands: the --model/--device options and their resolution, numeric
// argument parsers (a bad value is a commander usage error, exit 2), and loading a model together
// with its tokenizer. Imports only the public API (../index.ts), node:* and npm packages.

import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { isAbsolute, join, normalize, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, Option } from 'commander';
import { CheckpointError, createPolicy, encodeLong, getBackend, loadModel, POLICY_SYNTAX, UsageError, type Backend, type LoadedModel, type Model, type Policy, type Tokenizer } from '../index.ts';
import { fmtInt } from './format.ts';

/** The bundled model, found relative to the package (not the working directory), so `brickwork generate` works anywhere. */
export const DEFAULT_MODEL = fileURLToPath(new URL('../../models/tiny-llama', import.meta.url));

export const modelOption = () =>
  new Option('--model <dir>', 'model folder: Hugging Face (config.json + safetensors) or native (brickwork.json)').default(DEFAULT_MODEL, 'the bundled models/tiny-llama');

export const DEVICES = ['cpu', 'webgpu', 'auto'] as const;
export type Device = (typeof DEVICES)[number];
export const deviceOption = () =>
  new Option('--device <name>', 'where to run: cpu, webgpu, or auto (webgpu when available, else cpu)').choices(DEVICES).default('cpu');

/** The backend for --device. `auto` falls back to the CPU when WebGPU cannot be created, and says which it got. */
export async function resolveDevice(device: Device): Promise<{ backend: Backend; name: string }> {
  if (device !== 'auto') return { backend: await getBackend(device), name: device };
  try {
    return { backend: await getBackend('webgpu'), name: 'webgpu' };
  } catch {
    return { backend: await getBackend('cpu'), name: 'cpu' };
  }
}

/** A path as the user would like to read it: as given when relative, else relative to the working folder when inside it. */
export function displayPath(p: string): string {
  const abs = resolve(p);
  const rel = relative(process.cwd(), abs);
  // A relative path is shown as given (tidied); an absolute one relative to the working folder when inside it.
  const shown = rel === '' ? '.' : !isAbsolute(p) ? normalize(p).replace(/[\\/]+$/, '') : !rel.startsWith('..') && !isAbsolute(rel) ? rel : abs;
  return abs === DEFAULT_MODEL ? `${shown} (bundled)` : shown;
}

/** Same folder? (Resolves symlinks where the paths exist.) */
export function samePath(a: string, b: string): boolean {
  const real = (p: string) => (existsSync(p) ? realpathSync(p) : resolve(p));
  return real(a) === real(b);
}

// ---- argument parsers (commander calls them with the raw string) ----

export function intArg(min: number, what = `an integer >= ${min}`, max = Number.MAX_SAFE_INTEGER) {
  return (raw: string): number => {
    const n = Number(raw);
    if (!/^[+-]?\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected ${what}.`);
    return n;
  };
}

/** Seeds are 32-bit: larger ones would give the same numbers as their low 32 bits. */
export const seedArg = intArg(0, 'an integer in 0..4294967295', 2 ** 32 - 1);

export function floatArg(ok: (x: number) => boolean, what: string) {
  return (raw: string): number => {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || !ok(n)) throw new InvalidArgumentError(`expected ${what}.`);
    return n;
  };
}

/** "2,17" → [2, 17]; "none" → [] (never stop early). */
export function idListArg(raw: string): number[] {
  if (raw.trim().toLowerCase() === 'none') return [];
  const parts = raw.split(',').map((s) => s.trim());
  if (!parts.every((s) => /^\d+$/.test(s))) throw new InvalidArgumentError('expected comma-separated token ids, e.g. 0,2 (or "none").');
  return parts.map(Number);
}

/** Load a model and insist on its tokenizer (commands that take or print text need one). */
export async function loadWithTokenizer(dir: string, backend: Backend): Promise<LoadedModel & { tokenizer: Tokenizer }> {
  const lm = warnUnused(await loadModel(dir, { backend }));
  if (!lm.tokenizer)
    throw new CheckpointError(join(dir, 'tokenizer.json'), 'not found: this command needs the model\'s tokenizer',
      'copy tokenizer.json (and tokenizer_config.json) from the original model into the folder');
  return lm as LoadedModel & { tokenizer: Tokenizer };
}

/** Warn on stderr of checkpoint tensors the model did not read (as transformers does); returns `lm`. */
export function warnUnused<T extends LoadedModel>(lm: T): T {
  const n = lm.unusedTensors.length;
  if (n) {
    const shown = lm.unusedTensors.slice(0, 3).join(', ') + (n > 3 ? `, … (${n - 3} more)` : '');
    process.stderr.write(`warning: ${n} tensor${n === 1 ? '' : 's'} of ${displayPath(lm.source.dir)} ${n === 1 ? 'was' : 'were'} not used: ${shown}; its config may not describe these weights (layer count, tied embeddings)\n`);
  }
  return lm;
}

/** The text of a file given to `flag`, or a UsageError saying what is wrong with it. */
export function readText(file: string, flag = '--file'): string {
  let isFile = false;
  try {
    isFile = statSync(file).isFile();
  } catch {
    throw new UsageError(`${flag} ${file}: no such file`, `pass ${flag} with the path of a UTF-8 text file`);
  }
  if (!isFile) throw new UsageError(`${flag} ${file}: not a regular file`, `pass ${flag} with the path of a UTF-8 text file`);
  const text = readFileSync(file, 'utf8');
  if (text.trim() === '') throw new UsageError(`${flag} ${file}: the file is empty`, `${flag} needs some text; pass a non-empty file`);
  return text;
}

export const POLICY_HELP = `skip/exit policy: ${POLICY_SYNTAX.map((s) => s.split(' ')[0]).join(' | ')}`;
export const calibOption = (dflt: string) =>
  new Option('--calib <file>', `calibration text for block-influence (default: ${dflt})`);

/** Calibration texts shorter than this many tokens get a warning: the ranking of sublayers is noisy. */
const FEW_CALIBRATION_TOKENS = 256;

/**
 * Bind a --policy / --speculative spec to the model. Block influence calibrates on --calib when
 * given, else on `fallback.ids` (`fallback.what` says what they are; `scored`: the command also scores
 * them). A default that is short, or that the command scores, is warned of on stderr.
 */
export async function policyFromFlags(model: Model, tok: Tokenizer, spec: string, calib: string | undefined,
  fallback: { ids: number[]; what: string; scored?: boolean }): Promise<Policy> {
  const calibration = calib !== undefined ? encodeLong(tok, readText(calib, '--calib')) : fallback.ids;
  const policy = await createPolicy(model, spec, { calibration });
  if (calib === undefined && policy.spec.kind === 'block-influence' && (fallback.scored || calibration.length < FEW_CALIBRATION_TOKENS)) {
    const why = fallback.scored ? ', which are also scored' : '';
    process.stderr.write(`warning: block-influence calibrated on ${fallback.what} (${fmtInt(calibration.length)} tokens${why}); pass --calib FILE with other text of the same kind for a choice that does not depend on it\n`);
  }
  return policy;
}
