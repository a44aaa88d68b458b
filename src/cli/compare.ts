// `brickwork compare`: train the same small Llama-style model under several norm schemes (Pre-LN,
// Post-LN, Peri-LN, Mix-LN, LayerNorm scaling, HybridNorm) with the same data, seed and budget, and
// report validation-loss curves (compare.svg), a table, and compare.json. Each scheme trains in
// <out>/<scheme>/ through the same loop as `brickwork train`, so an interrupted comparison resumes.

import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import {
  CHECKPOINT_DIR, NORM_SCHEMES, Tokenizer, UsageError, encodeLong, loadModel, randomModel, readTrainerState, splitTokens, svgChart, train,
  writeFileAtomic, zooSpec, brickCosts, isCheckpoint, type Model, type NormScheme, type StepRecord, type TrainOptions,
} from '../index.ts';
import { deviceOption, displayPath, floatArg, intArg, seedArg, readText, resolveDevice, DEFAULT_MODEL, type Device } from './common.ts';
import { fmtDuration, fmtFixed, fmtInt, fmtRate, table } from './format.ts';

export const DEFAULT_CORPUS = fileURLToPath(new URL('../../data/tinyshakespeare/input.txt', import.meta.url));

interface CompareFlags {
  schemes: NormScheme[];
  data: string;
  tokenizer: string;
  width: number;
  layers: number;
  heads: number;
  ffn: number;
  steps: number;
  batch: number;
  seq: number;
  lr: number;
  warmup: number;
  seed: number;
  evalEvery: number;
  evalBatches: number;
  out: string;
  device: Device;
  json?: boolean;
}

function schemesArg(raw: string): NormScheme[] {
  const out = raw.split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of out) if (!NORM_SCHEMES.includes(s as NormScheme)) throw new UsageError(`--schemes: unknown scheme '${s}'`, `schemes: ${NORM_SCHEMES.join(', ')}`);
  if (!out.length) throw new UsageError('--schemes: give at least one scheme', `schemes: ${NORM_SCHEMES.join(', ')}`);
  return out as NormScheme[];
}

/** What compare.json holds per scheme. */
export interface SchemeResult {
  scheme: NormScheme;
  params: number;
  finalTrainLoss: number;
  finalValLoss: number;
  bestValLoss: number;
  tokensPerSecond: number;
  seconds: number;
  /** [step, val loss] at every validation. */
  valCurve: [number, number][];
  /** [step, train loss] at every step. */
  trainCurve: [number, number][];
}

export function compareCommand(): Command {
  return new Command('compare')
    .description('train one small model under several norm schemes with the same budget; plot and tabulate validation loss')
    .option('--schemes <list>', `comma-separated: ${NORM_SCHEMES.join(', ')}`, schemesArg, ['pre', 'post', 'peri', 'mix', 'lns'] as NormScheme[])
    .option('--data <file>', 'training text (the last 10% is validation)', DEFAULT_CORPUS)
    .option('--tokenizer <dir>', 'folder with tokenizer.json', DEFAULT_MODEL)
    .option('--width <n>', 'model width C', intArg(8), 256)
    .option('--layers <n>', 'layers L', intArg(1), 6)
    .option('--heads <n>', 'attention heads H', intArg(1), 8)
    .option('--ffn <n>', 'FFN hidden width F (SwiGLU)', intArg(1), 688)
    .option('--steps <n>', 'optimizer steps per scheme', intArg(1), 300)
    .option('--batch <n>', 'sequences per step', intArg(1), 8)
    .option('--seq <n>', 'tokens per sequence', intArg(2), 128)
    .option('--lr <x>', 'peak learning rate', floatArg((x) => x > 0, 'a number > 0'), 2e-3)
    .option('--warmup <n>', 'warm-up steps', intArg(0), 30)
    .option('--seed <n>', 'seed of the initial weights and data windows (the same for every scheme)', seedArg, 1)
    .option('--eval-every <n>', 'validation every N steps', intArg(1), 25)
    .option('--eval-batches <n>', 'validation batches', intArg(1), 8)
    .requiredOption('--out <dir>', 'output folder: one run per scheme, compare.json, compare.svg')
    .addOption(deviceOption())
    .option('--json', 'print compare.json to stdout')
    .action(async (f: CompareFlags) => {
      const out = resolve(f.out);
      const { backend, name } = await resolveDevice(f.device);
      if (!existsSync(join(f.tokenizer, 'tokenizer.json'))) throw new UsageError(`--tokenizer ${f.tokenizer} holds no tokenizer.json`, 'pass a model folder, e.g. models/tiny-llama');
      const tokenizer = await Tokenizer.fromDir(f.tokenizer);
      const data = splitTokens(encodeLong(tokenizer, readText(f.data, '--data')));
      let vocab = 2;
      for (const ids of [data.train, data.val]) for (const t of ids) if (t + 1 > vocab) vocab = t + 1;
      const results: SchemeResult[] = [];
      for (const scheme of f.schemes) {
        const spec = zooSpec({ vocab, width: f.width, layers: f.layers, heads: f.heads, ffn: f.ffn, context: f.seq, scheme });
        const dir = join(out, scheme);
        const ckpt = join(dir, CHECKPOINT_DIR);
        const opts: TrainOptions = { steps: f.steps, batch: f.batch, seq: f.seq, seed: f.seed, lr: f.lr, warmup: f.warmup, clip: 1, evalEvery: f.evalEvery, evalBatches: f.evalBatches, saveEvery: f.evalEvery * 4 };
        // A finished scheme is read back from its log; an interrupted one resumes; both only if they were
        // run with these settings (--steps may grow).
        const settings = { scheme, data: resolve(f.data), vocab, width: f.width, layers: f.layers, heads: f.heads, ffn: f.ffn, batch: f.batch, seq: f.seq, seed: f.seed, lr: f.lr, warmup: f.warmup, evalEvery: f.evalEvery, evalBatches: f.evalBatches };
        const state = isCheckpoint(ckpt) ? readTrainerState(ckpt) : undefined;
        if (state) {
          const was = (state.options.compare ?? {}) as Record<string, unknown>;
          const diff = Object.entries(settings).filter(([k, v]) => JSON.stringify(was[k]) !== JSON.stringify(v));
          if (diff.length) throw new UsageError(`${displayPath(dir)} holds a ${scheme} run with other settings: ${diff.map(([k, v]) => `${k} ${JSON.stringify(was[k] ?? null)}, not ${JSON.stringify(v)}`).join('; ')}`,
            'pass another --out for these settings, or delete that folder to train the scheme again');
        }
        const prior = state?.step ?? 0;
        let records: StepRecord[];
        if (prior >= f.steps) records = readLog(dir);
        else {
          const model: Model = prior > 0 ? (await loadModel(ckpt, { backend, weights: 'f32' })).model : randomModel(spec, backend, { seed: f.seed });
          process.stderr.write(`compare: ${scheme} (${fmtInt(model.numParams)} parameters)${prior ? `, resuming at step ${prior}` : ''}\n`);
          const r = await train(model, data, opts, {
            out: dir, resume: prior > 0, tokenizerDir: f.tokenizer, describe: { scheme, data: [resolve(f.data)], compare: settings },
            onStep: (s) => { if (s.valLoss !== undefined) process.stderr.write(`  ${scheme} step ${s.step}/${f.steps}: train ${fmtFixed(s.loss, 4)}, val ${fmtFixed(s.valLoss, 4)}, ${fmtRate(s.tokensPerSecond)} tokens/s\n`); },
          });
          records = prior > 0 ? readLog(dir) : r.records;
        }
        const vals = records.filter((r) => r.valLoss !== undefined);
        const lastRec = records[records.length - 1];
        results.push({
          scheme, params: brickCosts(spec).reduce((p, b) => p + b.params, 0),
          finalTrainLoss: lastRec.loss, finalValLoss: vals[vals.length - 1].valLoss!, bestValLoss: Math.min(...vals.map((r) => r.valLoss!)),
          tokensPerSecond: records.reduce((p, r) => p + r.tokensPerSecond, 0) / records.length, seconds: records.reduce((p, r) => p + (f.batch * f.seq) / r.tokensPerSecond, 0),
          valCurve: vals.map((r) => [r.step, r.valLoss!]), trainCurve: records.map((r) => [r.step, r.loss]),
        });
      }
      const report = {
        model: { width: f.width, layers: f.layers, heads: f.heads, ffn: f.ffn, vocab },
        budget: { steps: f.steps, batch: f.batch, seq: f.seq, tokens: f.steps * f.batch * f.seq, lr: f.lr, warmup: f.warmup, seed: f.seed },
        data: displayPath(f.data), device: name, results,
      };
      writeFileAtomic(join(out, 'compare.json'), JSON.stringify(report, null, 2) + '\n');
      const caption = `${fmtInt(results[0]?.params ?? 0)} parameters, ${fmtInt(f.steps)} steps × ${f.batch} × ${f.seq} tokens, lr ${f.lr}, seed ${f.seed}, ${displayPath(f.data)}`;
      writeFileAtomic(join(out, 'compare.svg'), svgChart([
        { title: 'validation loss', xLabel: 'step', yLabel: 'loss (nats/token)', series: results.map((r) => ({ name: r.scheme, points: r.valCurve })) },
        { title: 'training loss', xLabel: 'step', yLabel: 'loss (nats/token)', series: results.map((r) => ({ name: r.scheme, points: smooth(r.trainCurve, 10) })) },
      ], caption));
      if (f.json) { process.stdout.write(JSON.stringify(report) + '\n'); return; }
      process.stdout.write(table([
        { header: 'scheme' }, { header: 'params', align: 'right' }, { header: 'train loss', align: 'right' }, { header: 'val loss', align: 'right' },
        { header: 'best val', align: 'right' }, { header: 'tokens/s', align: 'right' }, { header: 'time', align: 'right' },
      ], results.map((r) => [r.scheme, fmtInt(r.params), fmtFixed(r.finalTrainLoss, 4), fmtFixed(r.finalValLoss, 4), fmtFixed(r.bestValLoss, 4), fmtRate(r.tokensPerSecond), fmtDuration(r.seconds * 1000)])) + '\n');
      process.stdout.write(`wrote ${displayPath(join(out, 'compare.json'))} and ${displayPath(join(out, 'compare.svg'))}\n`);
    });
}

function readLog(dir: string): StepRecord[] {
  return readFileSync(join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as StepRecord);
}

/** Trailing mean over `k` points, so the noisy per-step training loss reads as a curve. */
function smooth(points: [number, number][], k: number): [number, number][] {
  return points.map(([x], i) => {
    const w = points.slice(Math.max(0, i - k + 1), i + 1);
    return [x, w.reduce((p, q) => p + q[1], 0) / w.length];
  });
}
