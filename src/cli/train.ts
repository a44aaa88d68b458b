// `brickwork train`: train a model from a spec (random init) or continue a checkpoint, on text files.
// Shows a progress bar with loss and tokens/s on stderr (plain lines when stderr is not a terminal),
// writes <out>/log.jsonl and an atomic <out>/checkpoint every --save-every steps, and resumes a killed
// run with --resume (the run's options are read back from the checkpoint).

import { accessSync, constants, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import {
  BRICK_KINDS, CHECKPOINT_DIR, LOG_FILE, isCheckpoint, recoverDirAtomic, type TrainerState, SpecError, Tokenizer, UsageError, encodeLong, loadModel, randomModel, readTrainerState,
  nestedWidthSchedule, splitTokens, train, validateSpec, type BrickKind, type Model, type StepRecord, type TrainOptions,
} from '../index.ts';
import { deviceOption, displayPath, floatArg, intArg, seedArg, readText, resolveDevice, warnUnused, type Device } from './common.ts';
import { fmtDuration, fmtFixed, fmtInt, fmtRate, keyValues } from './format.ts';

interface TrainFlags {
  spec?: string;
  tokenizer?: string;
  model?: string;
  data: string[];
  valData?: string[];
  steps: number;
  batch: number;
  seq: number;
  lr: number;
  warmup: number;
  minLr?: number;
  schedule: 'cosine' | 'constant';
  weightDecay: number;
  decay: 'all' | 'matrices';
  clip: number;
  blockLr?: Partial<Record<BrickKind, number>>;
  auxCoef?: number;
  seed: number;
  initStd: number;
  out: string;
  device: Device;
  evalEvery: number;
  evalBatches: number;
  saveEvery: number;
  resume?: boolean;
  nested?: 'cycle' | 'sample';
  json?: boolean;
}

/** "embed=0.5,ffn=2" → { embed: 0.5, ffn: 2 }. */
function blockLrArg(raw: string): Partial<Record<BrickKind, number>> {
  const out: Partial<Record<BrickKind, number>> = {};
  for (const part of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^([a-z_]+)=([0-9.eE+-]+)$/.exec(part);
    if (!m || !BRICK_KINDS.includes(m[1] as BrickKind) || !(Number(m[2]) >= 0)) throw new InvalidArgumentError(`expected kind=multiplier pairs with kinds ${BRICK_KINDS.join(', ')}, e.g. embed=0.5,ffn=1.5; found '${part}'.`);
    out[m[1] as BrickKind] = Number(m[2]);
  }
  return out;
}

/** The same data files? Compared as resolved paths, so a run resumes from any folder and any spelling of them. */
const sameFiles = (a: unknown, b: unknown): boolean => {
  const norm = (x: unknown) => (Array.isArray(x) ? x.map((p) => resolve(String(p))) : x);
  return JSON.stringify(norm(a)) === JSON.stringify(norm(b));
};

/** Flags that define the run; on --resume they come from the checkpoint and may not be changed. */
const RUN_FLAGS = ['data', 'valData', 'nested', 'batch', 'seq', 'lr', 'warmup', 'minLr', 'schedule', 'weightDecay', 'decay', 'clip', 'blockLr', 'auxCoef', 'seed', 'evalEvery', 'evalBatches', 'saveEvery'] as const;

export function trainCommand(): Command {
  const cmd = new Command('train')
    .description('train a model (from a spec, or continue a checkpoint) on text files')
    .option('--spec <file>', 'ModelSpec JSON to train from scratch (random init)')
    .option('--tokenizer <dir>', "folder with the tokenizer.json for --spec (default: the spec's folder)")
    .option('--model <dir>', 'model folder to continue training (HF or native)')
    .option('--data <files...>', 'UTF-8 training text files (concatenated)')
    .option('--val-data <files...>', 'validation text (default: the last 10% of --data)')
    .option('--steps <n>', 'optimizer steps in total', intArg(1), 200)
    .option('--batch <n>', 'sequences per step (B)', intArg(1), 8)
    .option('--seq <n>', 'tokens per sequence (T)', intArg(1), 128)
    .option('--lr <x>', 'peak learning rate', floatArg((x) => x > 0, 'a number > 0'), 1e-3)
    .option('--warmup <n>', 'linear warm-up steps', intArg(0), 20)
    .option('--min-lr <x>', 'floor of the cosine decay (default: lr/10)', floatArg((x) => x >= 0, 'a number >= 0'))
    .addOption(new Option('--schedule <kind>', 'after warm-up: cosine decay or constant').choices(['cosine', 'constant']).default('cosine'))
    .option('--weight-decay <x>', 'AdamW decoupled weight decay', floatArg((x) => x >= 0, 'a number >= 0'), 0.1)
    .addOption(new Option('--decay <which>', 'which weights decay').choices(['all', 'matrices']).default('matrices'))
    .option('--clip <x>', 'clip the global gradient norm (0: off)', floatArg((x) => x >= 0, 'a number >= 0'), 1)
    .option('--block-lr <pairs>', `blockwise learning-rate multipliers, kind=x,… (kinds: ${BRICK_KINDS.join(', ')})`, blockLrArg)
    .option('--aux-coef <x>', 'MoE load-balancing loss weight (default 0.001 for MoE models)', floatArg((x) => x >= 0, 'a number >= 0'))
    .option('--seed <n>', 'seed of the initial weights and the data windows', seedArg, 1)
    .option('--init-std <x>', 'std of the random initial matrices (--spec)', floatArg((x) => x > 0, 'a number > 0'), 0.02)
    .requiredOption('--out <dir>', 'output folder: log.jsonl and checkpoint/')
    .addOption(deviceOption())
    .option('--eval-every <n>', 'validation loss every N steps (0: only at the end)', intArg(0), 50)
    .option('--eval-batches <n>', 'validation batches', intArg(1), 8)
    .option('--save-every <n>', 'checkpoint every N steps (0: only at the end)', intArg(0), 100)
    .addOption(new Option('--nested <mode>', 'MatFormer: train one nested FFN width per step, cycling or sampled').choices(['cycle', 'sample']))
    .option('--resume', 'continue the run in --out from its checkpoint (same options; --steps may grow)')
    .option('--json', 'print the summary as JSON');
  cmd.action(async (f: TrainFlags) => {
    const out = resolve(f.out);
    const ckpt = join(out, CHECKPOINT_DIR);
    if (existsSync(out) && !statSync(out).isDirectory()) throw new UsageError(`--out ${f.out} is a file`, 'pass a folder (new or holding an earlier run) to --out');
    try {
      mkdirSync(out, { recursive: true });
      accessSync(out, constants.W_OK);
    } catch (e) {
      throw new UsageError(`--out ${f.out}: cannot write there (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'pass a folder you can write to');
    }
    const recovered = recoverDirAtomic(ckpt); // what a killed save left behind
    if (recovered.restored) process.stderr.write(`note: ${displayPath(ckpt)} was put back from the copy a killed save left\n`);
    let resumedAt: TrainerState | undefined;
    // What the run's description held before this resume (the model it began from, its init), kept as it was.
    let origin: Record<string, unknown> = {};
    if (f.resume) {
      if (!isCheckpoint(ckpt)) {
        const inside = isCheckpoint(out) ? `; ${displayPath(out)} is itself a checkpoint: pass the run's folder, ${displayPath(dirname(out))}` : '';
        throw new UsageError(`--resume: ${displayPath(ckpt)} holds no checkpoint${inside}`, inside ? `brickwork train --resume --out ${displayPath(dirname(out))}` : 'start the run without --resume');
      }
      for (const k of ['spec', 'model'] as const)
        if (f[k] !== undefined) throw new UsageError(`--resume continues the model in ${displayPath(ckpt)}; --${k} cannot be given with it`, `drop --${k}, or start a new run in another --out`);
      resumedAt = readTrainerState(ckpt);
      const stored = resumedAt.options as Partial<TrainFlags> & { steps?: number };
      // Runs written by `brickwork compare` store one data file as a string.
      for (const k of ['data', 'valData'] as const) if (typeof stored[k] === 'string') stored[k] = [stored[k] as unknown as string];
      if (!Array.isArray(stored.data) || !stored.data.every((x) => typeof x === 'string'))
        throw new UsageError(`--resume: ${displayPath(join(ckpt, 'trainer.json'))} does not record the run's --data files`, 'start a new run with --model CHECKPOINT --data FILE… --out NEW');
      for (const k of RUN_FLAGS) {
        const given = cmd.getOptionValueSource(k) === 'cli';
        const same = k === 'data' || k === 'valData' ? sameFiles(f[k], stored[k]) : JSON.stringify(f[k]) === JSON.stringify(stored[k]);
        if (given && !same) throw new UsageError(`--resume: --${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} was ${JSON.stringify(stored[k])} in this run, not ${JSON.stringify(f[k])}`, 'a resumed run keeps its options (only --steps may change); start a new --out to change them');
        (f as unknown as Record<string, unknown>)[k] = stored[k];
      }
      origin = Object.fromEntries(['initStd', 'spec', 'tokenizer', 'model'].map((k) => [k, (stored as Record<string, unknown>)[k]]));
      if (cmd.getOptionValueSource('steps') !== 'cli') f.steps = stored.steps ?? f.steps;
    } else {
      if (!!f.spec === !!f.model) throw new UsageError('train needs exactly one of --spec FILE (new model) or --model DIR (continue one)', 'e.g. brickwork train --spec my.json --data corpus.txt --out runs/a');
      if (!f.data?.length) throw new UsageError('train needs --data FILE…', 'pass one or more UTF-8 text files');
      if (isCheckpoint(ckpt)) throw new UsageError(`${displayPath(ckpt)} already holds a checkpoint`, 'add --resume to continue it, or pick another --out');
    }
    const { backend, name } = await resolveDevice(f.device);
    let model: Model, tokenizer: Tokenizer, tokenizerDir: string;
    if (f.resume || f.model) {
      const dir = f.resume ? ckpt : resolve(f.model!);
      const lm = warnUnused(await loadModel(dir, { backend, weights: 'f32' }));
      if (!lm.tokenizer) throw new UsageError(`${displayPath(dir)} has no tokenizer.json`, 'training reads text, so the model folder needs its tokenizer');
      [model, tokenizer, tokenizerDir] = [lm.model, lm.tokenizer, dir];
    } else {
      const file = resolve(f.spec!);
      let raw: unknown;
      try {
        raw = JSON.parse(readText(file, '--spec'));
      } catch (e) {
        if (e instanceof UsageError) throw e;
        throw new UsageError(`--spec ${f.spec}: not valid JSON: ${(e as Error).message}`, 'pass a ModelSpec JSON file (see `brickwork inspect --spec`)');
      }
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
        throw new UsageError(`--spec ${f.spec}: expected a ModelSpec JSON object, found ${raw === null ? 'null' : Array.isArray(raw) ? 'an array' : typeof raw}`, 'pass a ModelSpec JSON file such as examples/llama-5m.json');
      const spec = validateSpec((raw as { spec?: unknown }).spec ?? raw);
      tokenizerDir = resolve(f.tokenizer ?? dirname(file));
      if (!existsSync(join(tokenizerDir, 'tokenizer.json')))
        throw new UsageError(`${f.tokenizer ? `--tokenizer ${f.tokenizer}` : `the folder of --spec ${f.spec}`} holds no tokenizer.json`, 'pass --tokenizer DIR (e.g. --tokenizer models/tiny-llama) or put tokenizer.json next to the spec');
      tokenizer = await Tokenizer.fromDir(tokenizerDir);
      model = randomModel(spec, backend, { seed: f.seed, std: f.initStd });
    }
    const encode = (files: string[], flag: string) => files.flatMap((file) => encodeLong(tokenizer, readText(file, flag)));
    const ids = encode(f.data, '--data');
    const valIds = f.valData?.length ? encode(f.valData, '--val-data') : undefined;
    const V = model.spec.vocabSize;
    for (const [flag, xs] of [['--data', ids], ['--val-data', valIds ?? []]] as const) {
      const top = xs.reduce((m, t) => (t > m ? t : m), 0);
      if (top >= V) throw new SpecError([`vocabSize: expected more than the largest token id of ${flag} (${top}), found ${V}`]);
    }
    // The data is part of the run: a resume on other text would not continue it.
    const stored = resumedAt?.options as { dataTokens?: number; valTokens?: number } | undefined;
    if (stored?.dataTokens !== undefined && (stored.dataTokens !== ids.length || (stored.valTokens ?? 0) !== (valIds?.length ?? 0)))
      throw new UsageError(`--resume: the data files now hold ${fmtInt(ids.length)} tokens${valIds ? ` (+${fmtInt(valIds.length)} validation)` : ''}, but the run began on ${fmtInt(stored.dataTokens)}${stored.valTokens ? ` (+${fmtInt(stored.valTokens)} validation)` : ''}`, 'resume on the same text, or start a new run with --model CHECKPOINT --out NEW');
    if (f.minLr !== undefined && f.minLr > f.lr) throw new UsageError(`--min-lr ${f.minLr} is above --lr ${f.lr}`, 'the cosine decay falls from --lr to --min-lr: pass a smaller --min-lr');
    if (f.warmup >= f.steps && f.schedule === 'cosine' && !f.resume) process.stderr.write(`warning: --warmup ${f.warmup} covers all ${f.steps} steps, so the learning rate never decays\n`);
    const data = splitTokens(ids, { val: valIds });

    const opts: TrainOptions = {
      steps: f.steps, batch: f.batch, seq: f.seq, seed: f.seed, lr: f.lr, warmup: f.warmup, minLr: f.minLr, schedule: f.schedule,
      weightDecay: f.weightDecay, decay: f.decay, clip: f.clip, blockLr: f.blockLr, auxCoef: f.auxCoef,
      evalEvery: f.evalEvery, evalBatches: f.evalBatches, saveEvery: f.saveEvery,
      forwardAt: f.nested ? nestedWidthSchedule(model.spec, f.nested, f.seed) : undefined,
    };
    const bar = trainProgress(f.steps, resumedAt?.step ?? 0);
    let result;
    try {
      result = await train(model, data, opts, {
        out, resume: f.resume, tokenizerDir,
        describe: {
          initStd: f.initStd, spec: f.spec && resolve(f.spec), tokenizer: f.tokenizer && resolve(f.tokenizer), model: f.model && resolve(f.model), ...origin,
          data: f.data.map((x) => resolve(x)), valData: f.valData?.map((x) => resolve(x)), nested: f.nested, dataTokens: ids.length, valTokens: valIds?.length ?? 0,
        },
        onStep: (r) => bar.update(r),
      });
    } finally {
      bar.stop();
    }
    const last = result.records[result.records.length - 1];
    // Tokens trained in this invocation over its wall time (validation and checkpoints included).
    const trainedSeconds = last ? last.elapsedSeconds - (resumedAt?.elapsedSeconds ?? 0) : 0;
    const tps = trainedSeconds > 0 ? (result.records.length * f.batch * f.seq) / trainedSeconds : 0;
    if (f.json) {
      process.stdout.write(JSON.stringify({ steps: result.steps, loss: last?.loss, val_loss: result.finalValLoss, tokens_per_second: tps, device: name, checkpoint: ckpt, log: join(out, LOG_FILE) }) + '\n');
      return;
    }
    process.stdout.write(keyValues([
      ['model', `${f.spec ? `${displayPath(f.spec)} (new, ${fmtInt(model.numParams)} parameters)` : f.model ? displayPath(f.model) : `${displayPath(ckpt)} (resumed at step ${fmtInt(resumedAt?.step ?? 0)})`}`],
      ['data', `${fmtInt(data.train.length)} training tokens, ${fmtInt(data.val.length)} validation tokens`],
      ['steps', `${fmtInt(result.steps)} × ${f.batch} × ${f.seq} tokens`],
      ...(last ? [['train loss', fmtFixed(last.loss, 4)], ['val loss', fmtFixed(result.finalValLoss ?? NaN, 4)]] as [string, string][] : []),
      ['speed', `${fmtRate(tps)} tokens/s on ${name}${last ? `, ${fmtDuration(last.elapsedSeconds * 1000)}` : ''}`],
      ['checkpoint', displayPath(ckpt)],
      ['log', displayPath(join(out, LOG_FILE))],
    ]) + '\n');
  });
  return cmd;
}

/** A bar with loss and tokens/s on a terminal; a plain line every 10 s (and at each validation) otherwise. */
function trainProgress(total: number, start: number) {
  const stream = process.stderr;
  if (!stream.isTTY) {
    let last = 0;
    return {
      update(r: StepRecord) {
        const now = performance.now();
        if (r.valLoss === undefined && now - last < 10_000 && r.step !== total) return;
        last = now;
        stream.write(`train: step ${r.step}/${total}, loss ${fmtFixed(r.loss, 4)}${r.valLoss !== undefined ? `, val ${fmtFixed(r.valLoss, 4)}` : ''}, ${fmtRate(r.tokensPerSecond)} tokens/s, lr ${r.lr.toExponential(2)}\n`);
      },
      stop() {},
    };
  }
  const bar = new cliProgress.SingleBar({
    stream, format: 'train [{bar}] {value}/{total} | loss {loss} | val {val} | {tps} tok/s | ETA {eta_formatted}', hideCursor: true, clearOnComplete: true,
  }, cliProgress.Presets.shades_classic);
  bar.start(total, start, { loss: '-', val: '-', tps: '-' });
  let val = '-';
  return {
    update(r: StepRecord) {
      if (r.valLoss !== undefined) val = fmtFixed(r.valLoss, 4);
      bar.update(r.step, { loss: fmtFixed(r.loss, 4), val, tps: fmtRate(r.tokensPerSecond) });
    },
    stop() { bar.stop(); },
  };
}
