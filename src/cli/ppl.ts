// `brickwork ppl`: perplexity of a model on a text file, with the fixtures' windowing (consecutive
// windows of --window scored tokens, see eval/perplexity.ts). Shows a progress bar on stderr and
// prints a small table, or `{"ppl", "tokens_scored"}` with --json. The whole file is read into memory.

import { readFileSync, statSync } from 'node:fs';
import { Command } from 'commander';
import { encodeLong, perplexity, UsageError } from '../index.ts';
import { deviceOption, displayPath, intArg, loadWithTokenizer, modelOption, resolveDevice, type Device } from './common.ts';
import { fmtDuration, fmtFixed, fmtInt, fmtRate, keyValues } from './format.ts';
import { progress } from './progress.ts';

interface PplFlags {
  model: string;
  file: string;
  window: number;
  maxTokens?: number;
  batch?: number;
  device: Device;
  json?: boolean;
}

/** The text of --file, or a UsageError saying what is wrong with it (checked before the model loads). */
function readText(file: string): string {
  let isFile = false;
  try {
    isFile = statSync(file).isFile();
  } catch {
    throw new UsageError(`--file ${file}: no such file`, 'pass --file with the path of a UTF-8 text file');
  }
  if (!isFile) throw new UsageError(`--file ${file}: not a regular file`, 'pass --file with the path of a UTF-8 text file');
  const text = readFileSync(file, 'utf8');
  if (text.trim() === '') throw new UsageError(`--file ${file}: the file is empty`, 'perplexity needs some text to score; pass a non-empty file');
  return text;
}

export function pplCommand(): Command {
  return new Command('ppl')
    .description('perplexity of the model on a text file')
    .addOption(modelOption())
    .requiredOption('--file <path>', 'UTF-8 text file to score')
    .option('--window <n>', 'tokens scored per window (each window sees only its own tokens)', intArg(1), 256)
    .option('--max-tokens <n>', 'score at most this many tokens (default: the whole file)', intArg(1))
    .option('--batch <n>', 'windows per forward pass (default: chosen to bound memory)', intArg(1))
    .addOption(deviceOption())
    .option('--json', 'print {"ppl", "tokens_scored"} as JSON')
    .action(async (f: PplFlags) => {
      const text = readText(f.file);
      const { backend, name } = await resolveDevice(f.device);
      const { model, tokenizer } = await loadWithTokenizer(f.model, backend);
      const ids = encodeLong(tokenizer, text);
      const total = Math.min(f.maxTokens ?? Infinity, ids.length - 1);
      const bar = total >= 1 ? progress('ppl', total, { unit: 'tokens' }) : undefined;
      const t0 = performance.now();
      let r;
      try {
        r = await perplexity(model, ids, { window: f.window, maxTokens: f.maxTokens, batch: f.batch, onProgress: (done, all) => bar?.update(done, all) });
      } finally {
        bar?.stop();
      }
      const ms = performance.now() - t0;
      if (f.json) {
        process.stdout.write(JSON.stringify({ ppl: r.ppl, tokens_scored: r.tokensScored }) + '\n');
        return;
      }
      process.stdout.write(keyValues([
        ['model', displayPath(f.model)],
        ['file', `${displayPath(f.file)} (${fmtInt(text.length)} characters, ${fmtInt(ids.length)} tokens)`],
        ['window', fmtInt(f.window)],
        ['tokens scored', `${fmtInt(r.tokensScored)} in ${fmtInt(r.windows)} window${r.windows === 1 ? '' : 's'}`],
        ['perplexity', fmtFixed(r.ppl, 3)],
        ['time', `${fmtDuration(ms)} (${fmtRate(r.tokensScored / (ms / 1000))} tokens/s on ${name})`],
      ]) + '\n');
    });
}
