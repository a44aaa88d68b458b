// `brickwork sweep`: how perplexity and decode speed change as a policy skips more. For each setting
// it prints a table row (FLOPs skipped, perplexity, decode tokens/s and the ratio to dense measured in
// the same run, and with --speculative the acceptance rate and speedup of self-speculative decoding
// with that setting as the draft), and writes the same as JSON and an SVG plot into --out.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { encodeLong, svgChart, sweep, SWEEP_DEFAULTS, UsageError, writeFileAtomic, type SweepResult, type SweepRow } from '../index.ts';
import { calibOption, deviceOption, displayPath, intArg, loadWithTokenizer, modelOption, readText, resolveDevice, type Device } from './common.ts';
import { fmtDuration, fmtFixed, fmtInt, fmtRate, table } from './format.ts';

interface SweepFlags {
  model: string;
  file: string;
  policy: string[];
  values?: number[];
  options?: string;
  window: number;
  maxTokens: number;
  calib?: string;
  promptTokens: number;
  genTokens: number;
  speculative?: boolean;
  draft: number;
  out: string;
  device: Device;
  json?: boolean;
}

const policyList = (raw: string): string[] => {
  const ps = raw.split(',').map((s) => s.trim());
  for (const p of ps) if (!(p in SWEEP_DEFAULTS)) throw new InvalidArgumentError(`expected ${Object.keys(SWEEP_DEFAULTS).join(', ')} (comma-separated), found '${p}'.`);
  return ps;
};
const numberList = (raw: string): number[] => {
  const items = raw.split(',').map((s) => s.trim());
  const xs = items.map(Number);
  if (items.some((s) => s === '') || xs.some((x) => !Number.isFinite(x) || x < 0 || x > 1)) throw new InvalidArgumentError('expected comma-separated numbers in [0, 1], e.g. 0.125,0.25,0.5.');
  return xs;
};
const pct = (x: number) => `${fmtFixed(100 * x, 1)}%`;

/** The report's table. */
export function sweepTable(r: SweepResult, speculative: boolean): string {
  const rows = [r.dense, ...r.rows];
  const headers = ['setting', 'FFN skipped', 'attn skipped', 'perplexity', 'decode tok/s', 'dense tok/s', 'vs dense', ...(speculative ? ['accept', 'spec tok/s', 'dense tok/s', 'spec vs dense', 'same output'] : [])];
  const cols = [{ header: 'policy' }, ...headers.map((header) => ({ header, align: 'right' as const }))];
  const cells = (x: SweepRow) => [
    x.policy, x.policy === 'dense' ? '-' : String(x.value), pct(x.skipped.ffn), pct(x.skipped.attn), fmtFixed(x.ppl, 3),
    fmtRate(x.decodeTokensPerSecond), fmtRate(x.denseTokensPerSecond), `${fmtFixed(x.speedup, 2)}x`,
    ...(speculative ? (x.speculative ? [pct(x.speculative.acceptanceRate), fmtRate(x.speculative.tokensPerSecond), fmtRate(x.speculative.denseTokensPerSecond), `${fmtFixed(x.speculative.speedup, 2)}x`, x.speculative.identical ? 'yes' : 'NO'] : ['-', '-', '-', '-', '-']) : []),
  ];
  return table(cols, rows.map(cells));
}

/** Perplexity and decode speed against the FFN FLOPs skipped, one series per policy. */
export function sweepSvg(r: SweepResult, title: string): string {
  const kinds = [...new Set(r.rows.map((x) => x.policy))];
  const series = (y: (x: SweepRow) => number) => kinds.map((k) => ({ name: k, points: [r.dense, ...r.rows.filter((x) => x.policy === k)].map((x) => [x.skipped.ffn, y(x)] as [number, number]) }));
  const panels = [
    { title: `Perplexity (${title})`, xLabel: 'share of FFN FLOPs skipped', yLabel: 'perplexity', series: series((x) => x.ppl) },
    { title: 'Greedy decode speed', xLabel: 'share of FFN FLOPs skipped', yLabel: 'speedup over dense (x)', series: series((x) => x.speedup) },
  ];
  if (r.rows.some((x) => x.speculative)) {
    panels.push({
      title: 'Self-speculative decoding', xLabel: 'share of FFN FLOPs skipped by the draft', yLabel: 'speedup over dense (x)',
      series: kinds.map((k) => ({ name: k, points: r.rows.filter((x) => x.policy === k && x.speculative).map((x) => [x.skipped.ffn, x.speculative!.speedup] as [number, number]) })),
    });
  }
  return svgChart(panels, `dense: perplexity ${fmtFixed(r.dense.ppl, 3)}, ${fmtRate(r.dense.decodeTokensPerSecond)} tok/s; ${fmtInt(r.tokensScored)} tokens scored`);
}

export function sweepCommand(): Command {
  return new Command('sweep')
    .description('perplexity and decode speed across skip fractions (or exit thresholds); writes a table, JSON and an SVG plot')
    .addOption(modelOption())
    .requiredOption('--file <path>', 'UTF-8 text to score (its first tokens are also the prompt for the speed runs)')
    .requiredOption('--policy <names>', `policies to sweep, comma-separated: ${Object.keys(SWEEP_DEFAULTS).join(', ')}`, policyList)
    .option('--values <list>', 'settings to try: fractions to skip (thresholds for early-exit); default per policy', numberList)
    .option('--options <opts>', 'extra policy options appended to every spec, e.g. warmup=16 or unit=block')
    .option('--window <n>', 'tokens scored per window', intArg(1), 256)
    .option('--max-tokens <n>', 'score at most this many tokens', intArg(1), 16384)
    .addOption(calibOption('the --file tokens after those scored'))
    .option('--prompt-tokens <n>', 'prompt length for the speed runs', intArg(1), 32)
    .option('--gen-tokens <n>', 'tokens generated per speed run', intArg(2), 128)
    .option('--speculative', 'also decode self-speculatively with each setting as the draft')
    .option('--draft <k>', 'tokens drafted per verification with --speculative', intArg(1), 4)
    .option('--out <dir>', 'folder for sweep.json and sweep.svg', 'sweep')
    .addOption(deviceOption())
    .option('--json', 'print the JSON instead of the table')
    .action(async (f: SweepFlags) => {
      const text = readText(f.file);
      if (f.values && f.policy.length > 1) throw new UsageError('--values applies to one policy at a time', 'sweep one policy per run when giving --values');
      const { backend, name } = await resolveDevice(f.device);
      const { model, tokenizer } = await loadWithTokenizer(f.model, backend);
      const ids = encodeLong(tokenizer, text);
      const scored = Math.min(f.maxTokens, ids.length - 1);
      // NOTE: without --calib, block influence calibrates on text the perplexity does not score.
      const calibration = f.calib !== undefined ? encodeLong(tokenizer, readText(f.calib, '--calib')) : ids.slice(scored + 1);
      if (f.policy.includes('block-influence') && calibration.length < 2)
        throw new UsageError(`--file has no tokens left after the ${fmtInt(scored)} scored ones to calibrate block influence on`, 'pass --calib FILE or a lower --max-tokens');
      const t0 = performance.now();
      const r = await sweep(model, {
        policies: f.policy, values: f.values ? { [f.policy[0]]: f.values } : undefined,
        extra: f.options ? Object.fromEntries(f.policy.map((p) => [p, f.options!])) : undefined,
        ids, window: f.window, maxTokens: f.maxTokens, calibration, prompt: ids.slice(0, f.promptTokens), genTokens: f.genTokens,
        speculative: f.speculative ? { draftLength: f.draft } : undefined,
        onStep: (s) => { if (!f.json) process.stderr.write(`  ${s} ...\n`); },
      });
      const report = {
        model: displayPath(f.model), file: displayPath(f.file), device: name, window: f.window, tokens_scored: r.tokensScored,
        prompt_tokens: f.promptTokens, gen_tokens: f.genTokens, draft_length: f.speculative ? f.draft : undefined,
        calibration: f.calib !== undefined ? displayPath(f.calib) : `the ${fmtInt(calibration.length)} tokens of --file after the scored ones`,
        rows: [r.dense, ...r.rows],
      };
      mkdirSync(f.out, { recursive: true });
      writeFileAtomic(join(f.out, 'sweep.json'), JSON.stringify(report, null, 2) + '\n');
      writeFileAtomic(join(f.out, 'sweep.svg'), sweepSvg(r, `${displayPath(f.model)}, ${name}`));
      if (f.json) {
        process.stdout.write(JSON.stringify(report) + '\n');
        return;
      }
      process.stdout.write(`${displayPath(f.model)} on ${name}: ${fmtInt(r.tokensScored)} tokens of ${displayPath(f.file)} scored in windows of ${f.window}; speed from ${f.genTokens} greedy tokens after a ${f.promptTokens}-token prompt\n\n`);
      process.stdout.write(sweepTable(r, !!f.speculative) + '\n\n');
      for (const x of r.rows) process.stdout.write(`  ${x.spec}: ${x.plan}\n`);
      process.stdout.write(`\nwrote ${join(f.out, 'sweep.json')} and ${join(f.out, 'sweep.svg')} (${fmtDuration(performance.now() - t0)})\n`);
    });
}
