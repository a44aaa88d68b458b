// `brickwork ppl`: perplexity of a model on a text file, with the fixtures' windowing (consecutive
// windows of --window scored tokens, see eval/perplexity.ts). Shows a progress bar on stderr and
// prints a small table, or `{"ppl", "tokens_scored"}` with --json. The whole file is read into memory.

import { Command } from 'commander';
import { encodeLong, perplexity, UsageError } from '../index.ts';
import { calibOption, deviceOption, displayPath, intArg, loadWithTokenizer, modelOption, POLICY_HELP, policyFromFlags, readText, resolveDevice, type Device } from './common.ts';
import { fmtDuration, fmtFixed, fmtInt, fmtRate, keyValues, skippedText } from './format.ts';
import { progress } from './progress.ts';

interface PplFlags {
  model: string;
  file: string;
  window: number;
  maxTokens?: number;
  batch?: number;
  device: Device;
  policy?: string;
  calib?: string;
  json?: boolean;
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
    .option('--policy <spec>', POLICY_HELP)
    .addOption(calibOption('the --file tokens after those scored, where there are 256 or more; else the first tokens of --file'))
    .option('--json', 'print {"ppl", "tokens_scored"} (and "skipped" with --policy) as JSON')
    .action(async (f: PplFlags) => {
      const text = readText(f.file);
      const { backend, name } = await resolveDevice(f.device);
      const { model, tokenizer } = await loadWithTokenizer(f.model, backend);
      const ids = encodeLong(tokenizer, text);
      const total = Math.min(f.maxTokens ?? Infinity, ids.length - 1);
      // Block influence calibrates on the text after the scored tokens where there is enough of it.
      const rest = ids.slice(total + 1);
      const fallback = rest.length >= 256 ? { ids: rest, what: 'the --file tokens after those scored' } : { ids, what: 'the first tokens of --file', scored: true };
      const policy = f.policy === undefined ? undefined : await policyFromFlags(model, tokenizer, f.policy, f.calib, fallback);
      const bar = total >= 1 ? progress('ppl', total, { unit: 'tokens' }) : undefined;
      const t0 = performance.now();
      let r;
      try {
        r = await perplexity(model, ids, { window: f.window, maxTokens: f.maxTokens, batch: f.batch, policy, onProgress: (done, all) => bar?.update(done, all) });
      } finally {
        bar?.stop();
      }
      const ms = performance.now() - t0;
      if (f.json) {
        process.stdout.write(JSON.stringify({ ppl: r.ppl, tokens_scored: r.tokensScored, ...(policy ? { policy: policy.text, skipped_fraction: r.skipped.all, skipped: r.skipped } : {}) }) + '\n');
        return;
      }
      process.stdout.write(keyValues([
        ['model', displayPath(f.model)],
        ['file', `${displayPath(f.file)} (${fmtInt(text.length)} characters, ${fmtInt(ids.length)} tokens)`],
        ['window', fmtInt(f.window)],
        ['tokens scored', `${fmtInt(r.tokensScored)} in ${fmtInt(r.windows)} window${r.windows === 1 ? '' : 's'}`],
        ...(policy ? [['policy', `${policy.text}: ${policy.describe()}`], ['skipped', skippedText(r.skipped)]] as [string, string][] : []),
        ['perplexity', fmtFixed(r.ppl, 3)],
        ['time', `${fmtDuration(ms)} (${fmtRate(r.tokensScored / (ms / 1000))} tokens/s on ${name})`],
      ]) + '\n');
    });
}
