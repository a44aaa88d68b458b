// `brickwork train` end to end: a run killed with SIGKILL and resumed with --resume ends with the same
// checkpoint bytes as an uninterrupted run; bad input exits 1 with a hint and no stack trace.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { llamaSpec } from '../src/model/init.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TMP = mkdtempSync(join(tmpdir(), 'bw-cli-train-'));
after(() => rmSync(TMP, { recursive: true, force: true }));

const SPEC = join(TMP, 'spec.json');
writeFileSync(SPEC, JSON.stringify(llamaSpec({ vocab: 4096, width: 32, layers: 2, heads: 2, ffn: 64, context: 64 })));
const DATA = join(TMP, 'data.txt');
writeFileSync(DATA, readFileSync(join(ROOT, 'data/tinyshakespeare/input.txt'), 'utf8').slice(0, 30_000));
const base = ['train', '--spec', SPEC, '--tokenizer', 'models/tiny-llama', '--data', DATA, '--steps', '24', '--batch', '4', '--seq', '48', '--lr', '3e-3', '--warmup', '3', '--eval-every', '6', '--save-every', '3', '--seed', '7'];

function cli(...args: string[]) {
  const env = { ...process.env };
  delete env.BRICKWORK_DEBUG;
  const r = spawnSync(process.execPath, ['--import', './scripts/ts.mjs', 'src/cli/main.ts', ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function cleanError(r: ReturnType<typeof cli>, mentions: RegExp) {
  assert.equal(r.code, 1, `expected exit 1, got ${r.code}; stderr:\n${r.stderr}`);
  assert.match(r.stderr, /^error: /m);
  assert.match(r.stderr, /^hint: /m);
  assert.ok(!r.stderr.includes('    at '), `stack trace printed:\n${r.stderr}`);
  assert.match(r.stderr, mentions);
}

const stepOf = (dir: string) => {
  try { return JSON.parse(readFileSync(join(dir, 'checkpoint', 'trainer.json'), 'utf8')).step as number; } catch { return 0; }
};

test('train: a run killed with SIGKILL and resumed ends exactly like an uninterrupted one', async () => {
  const a = join(TMP, 'a'), b = join(TMP, 'b');
  const full = cli(...base, '--out', a, '--json');
  assert.equal(full.code, 0, full.stderr);
  const summary = JSON.parse(full.stdout);
  assert.equal(summary.steps, 24);
  assert.ok(Number.isFinite(summary.loss) && Number.isFinite(summary.val_loss));

  const child = spawn(process.execPath, ['--import', './scripts/ts.mjs', 'src/cli/main.ts', ...base, '--out', b], { cwd: ROOT, stdio: 'ignore' });
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  while (stepOf(b) < 3) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  child.kill('SIGKILL');
  await exited;
  const killedAt = stepOf(b);
  assert.ok(killedAt >= 3 && killedAt < 24, `the run should have been killed mid-way (checkpoint at step ${killedAt})`);

  const resumed = cli('train', '--out', b, '--resume', '--json');
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.deepEqual(JSON.parse(resumed.stdout).loss, summary.loss);
  assert.ok(readFileSync(join(b, 'checkpoint', 'model.safetensors')).equals(readFileSync(join(a, 'checkpoint', 'model.safetensors'))), 'weights differ');
  assert.ok(readFileSync(join(b, 'checkpoint', 'optimizer.safetensors')).equals(readFileSync(join(a, 'checkpoint', 'optimizer.safetensors'))), 'optimizer state differs');
  const steps = readFileSync(join(b, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
  assert.deepEqual(steps, Array.from({ length: 24 }, (_, i) => i + 1));
  // The checkpoint is a model like any other.
  const ppl = cli('ppl', '--model', join(a, 'checkpoint'), '--file', DATA, '--window', '32', '--max-tokens', '64', '--json');
  assert.equal(ppl.code, 0, ppl.stderr);
});

test('train: bad input exits 1 with a hint', () => {
  const empty = join(TMP, 'empty.txt');
  writeFileSync(empty, '  \n');
  cleanError(cli(...base, '--data', empty, '--out', join(TMP, 'e1')), /--data .*empty/);
  cleanError(cli(...base, '--seq', '65', '--out', join(TMP, 'e2')), /sequence length 65 exceeds the model's context of 64/);
  cleanError(cli('train', '--data', DATA, '--out', join(TMP, 'e3')), /exactly one of --spec/);
  cleanError(cli('train', '--out', join(TMP, 'nothing'), '--resume'), /holds no checkpoint/);
  const bad = join(TMP, 'bad.json');
  writeFileSync(bad, JSON.stringify({ ...llamaSpec({ vocab: 4096, width: 32, layers: 1, heads: 3, ffn: 0 }) }));
  cleanError(cli('train', '--spec', bad, '--tokenizer', 'models/tiny-llama', '--data', DATA, '--out', join(TMP, 'e4')), /hidden: expected an integer > 0/);
  const c = join(TMP, 'c');
  assert.equal(cli(...base, '--steps', '2', '--save-every', '1', '--out', c).code, 0);
  cleanError(cli('train', '--out', c, '--resume', '--lr', '0.5'), /--lr was 0.003 in this run/);
  cleanError(cli(...base, '--out', c), /already holds a checkpoint/);
  assert.ok(!existsSync(join(TMP, 'e1', 'checkpoint')));
});

test('compare: trains each scheme with the same budget and writes a table, compare.json and compare.svg', () => {
  const out = join(TMP, 'cmp');
  const r = cli('compare', '--schemes', 'pre,peri', '--data', DATA, '--width', '32', '--layers', '2', '--heads', '2', '--ffn', '64', '--steps', '4', '--batch', '2', '--seq', '32', '--eval-every', '2', '--eval-batches', '2', '--out', out);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^scheme\s+params\s+train loss\s+val loss/m);
  assert.match(r.stdout, /^pre\s/m);
  assert.match(r.stdout, /^peri\s/m);
  const report = JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8'));
  assert.deepEqual(report.results.map((x: { scheme: string }) => x.scheme), ['pre', 'peri']);
  for (const x of report.results) {
    assert.deepEqual(x.valCurve.map((p: number[]) => p[0]), [2, 4]);
    assert.ok(Number.isFinite(x.finalValLoss));
  }
  // Peri-LN has two norms per sublayer, so more parameters than Pre-LN.
  assert.ok(report.results[1].params > report.results[0].params);
  const svg = readFileSync(join(out, 'compare.svg'), 'utf8');
  assert.match(svg, /^<svg/);
  assert.match(svg, /validation loss/);
  // Run again: finished schemes are read back, not retrained.
  const again = cli('compare', '--schemes', 'pre,peri', '--data', DATA, '--width', '32', '--layers', '2', '--heads', '2', '--ffn', '64', '--steps', '4', '--batch', '2', '--seq', '32', '--eval-every', '2', '--eval-batches', '2', '--out', out, '--json');
  assert.equal(again.code, 0, again.stderr);
  assert.doesNotMatch(again.stderr, /parameters\)/);
  assert.deepEqual(JSON.parse(again.stdout).results, report.results);
  cleanError(cli('compare', '--schemes', 'pre,bogus', '--out', out), /unknown scheme 'bogus'/);
});

test('train: a NaN, in the validation loss or in the weights, stops the run before it is saved', () => {
  // lr 1e20 without clipping: the first update wrecks the model, the validation loss is NaN.
  const v = join(TMP, 'nan-val');
  cleanError(cli(...base, '--steps', '1', '--lr', '1e20', '--clip', '0', '--warmup', '0', '--out', v), /training stopped at step 1: the validation loss is NaN/);
  assert.ok(!existsSync(join(v, 'checkpoint')), 'no checkpoint of the NaN model');
  // lr 1e39 is infinite in f32: the weights overflow at step 1, which was to be saved.
  const w = join(TMP, 'nan-weights');
  const r = cli(...base, '--steps', '4', '--save-every', '1', '--eval-every', '0', '--lr', '1e39', '--warmup', '0', '--out', w);
  cleanError(r, /training stopped at step 1: weight '[^']+' holds a non-finite value after the update/);
  assert.match(r.stderr, /hint: .*--model .*checkpoint --out NEW/);
  assert.ok(!existsSync(join(w, 'checkpoint')));
});

test('train: --resume keeps the run as it was (MatFormer widths, data, provenance) and refuses what would change it', () => {
  const spec = llamaSpec({ vocab: 4096, width: 32, layers: 2, heads: 2, ffn: 64, context: 64 });
  for (const l of spec.layers) for (const s of l.sublayers) if (s.kind === 'ffn') s.nested = [16, 32, 64];
  const nestedSpec = join(TMP, 'nested.json');
  writeFileSync(nestedSpec, JSON.stringify(spec));
  const args = ['train', '--spec', nestedSpec, '--tokenizer', 'models/tiny-llama', '--data', DATA, '--batch', '2', '--seq', '32', '--warmup', '1', '--eval-every', '2', '--save-every', '2', '--seed', '3', '--nested', 'sample', '--init-std', '0.05'];
  const whole = join(TMP, 'mf-whole'), split = join(TMP, 'mf-split');
  assert.equal(cli(...args, '--steps', '6', '--out', whole).code, 0);
  assert.equal(cli(...args, '--steps', '2', '--out', split).code, 0);
  const state = JSON.parse(readFileSync(join(split, 'checkpoint', 'trainer.json'), 'utf8'));
  assert.equal(state.options.nested, 'sample');
  const resumed = cli('train', '--resume', '--out', split, '--steps', '6');
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stdout, /resumed at step 2/);
  const losses = (dir: string) => readFileSync(join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss);
  assert.deepEqual(losses(split), losses(whole), 'the resumed MatFormer run trains the same widths');
  const after = JSON.parse(readFileSync(join(split, 'checkpoint', 'trainer.json'), 'utf8')).options;
  assert.equal(after.initStd, 0.05, 'the run keeps its provenance');
  assert.equal(after.spec, nestedSpec);
  // Refused: a finished run, a model given with --resume, other text under the same name.
  cleanError(cli('train', '--resume', '--out', split), /already at step 6, and 6 steps were asked for/);
  cleanError(cli('train', '--resume', '--out', split, '--steps', '8', '--spec', nestedSpec), /--spec cannot be given with it/);
  const moved = join(TMP, 'moved.txt');
  writeFileSync(moved, readFileSync(DATA, 'utf8'));
  const other = join(TMP, 'mf-other');
  assert.equal(cli(...args.map((a) => (a === DATA ? moved : a)), '--steps', '2', '--out', other).code, 0);
  writeFileSync(moved, readFileSync(DATA, 'utf8').slice(0, 20_000));
  cleanError(cli('train', '--resume', '--out', other, '--steps', '4'), /the data files now hold [\d,]+ tokens, but the run began on [\d,]+/);
});

test('train: more bad input gets a clear error', () => {
  const nul = join(TMP, 'null.json');
  writeFileSync(nul, 'null');
  cleanError(cli('train', '--spec', nul, '--tokenizer', 'models/tiny-llama', '--data', DATA, '--out', join(TMP, 'b1')), /expected a ModelSpec JSON object, found null/);
  const file = join(TMP, 'a-file');
  writeFileSync(file, 'x');
  cleanError(cli(...base, '--out', file), /--out .* is a file/);
  cleanError(cli(...base, '--lr', '1e-3', '--min-lr', '0.5', '--out', join(TMP, 'b2')), /--min-lr 0.5 is above --lr 0.001/);
  const small = join(TMP, 'small-vocab.json');
  writeFileSync(small, JSON.stringify(llamaSpec({ vocab: 600, width: 32, layers: 1, heads: 2, ffn: 64, context: 64 })));
  const lowIds = join(TMP, 'low-ids.txt');
  writeFileSync(lowIds, 'the the the the. '.repeat(400));
  const r = cli('train', '--spec', small, '--tokenizer', 'models/tiny-llama', '--data', lowIds, '--val-data', DATA, '--steps', '2', '--batch', '2', '--seq', '16', '--out', join(TMP, 'b3'));
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /vocabSize: expected more than the largest token id of --val-data/);
  assert.equal(cli(...base, '--seed', '4294967296', '--out', join(TMP, 'b4')).code, 2, 'seeds are 32-bit');
});

test('compare: a scheme folder trained with other settings is refused, not reported under the new ones', () => {
  const out = join(TMP, 'cmp-stale');
  const args = ['compare', '--schemes', 'pre', '--data', DATA, '--width', '16', '--layers', '1', '--heads', '2', '--ffn', '32', '--steps', '2', '--batch', '2', '--seq', '16', '--eval-every', '2', '--eval-batches', '1', '--out', out];
  assert.equal(cli(...args).code, 0);
  cleanError(cli(...args.map((a) => (a === '16' ? '32' : a))), /holds a pre run with other settings: width 16, not 32/);
  cleanError(cli(...args, '--lr', '0.5'), /lr 0\.002, not 0\.5/);
});
