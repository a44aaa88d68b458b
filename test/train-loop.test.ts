// The training loop: a killed-and-resumed run equals an uninterrupted one bit for bit on the CPU; a
// NaN stops training naming the step and the brick and leaves the last checkpoint intact; bad input
// gets clear errors; a short run lowers the validation loss.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend, loadModel, TrainingError, UsageError, type Model } from '../src/index.ts';
import { llamaSpec, randomModel } from '../src/model/init.ts';
import { splitTokens, trainBatch } from '../src/train/data.ts';
import { readTrainerState } from '../src/train/checkpoint.ts';
import { CHECKPOINT_DIR, train, type TrainOptions } from '../src/train/loop.ts';

const spec = llamaSpec({ vocab: 64, width: 32, layers: 2, heads: 4, kvHeads: 2, ffn: 48, context: 64 });
/** Text-like ids with structure to learn: a noisy repeating pattern. */
function tokens(n: number): number[] {
  let s = 1;
  return Array.from({ length: n }, (_, i) => { s = (s * 48271) % 2147483647; return (i % 7 === 0 ? s % 64 : (i * 5 + (i >> 3)) % 64); });
}
const data = splitTokens(tokens(4000));
const opts: TrainOptions = { steps: 6, batch: 4, seq: 16, seed: 3, lr: 3e-3, warmup: 2, evalEvery: 3, evalBatches: 2, saveEvery: 2, clip: 1 };
const tmp = () => mkdtempSync(join(tmpdir(), 'bw-train-'));
const fresh = () => randomModel(spec, new CpuBackend(), { seed: 5 });
const weightsOf = async (m: Model) => Promise.all([...m.weights.values()].map((w) => w.toF32()));

test('batches are a pure function of (seed, step)', () => {
  const a = trainBatch(data.train, 9, 4, 3, 8), b = trainBatch(data.train, 9, 4, 3, 8), c = trainBatch(data.train, 9, 5, 3, 8);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.ids, c.ids);
  assert.deepEqual(a.targets.subarray(0, 7), a.ids.subarray(1, 8));
});

test('a killed-and-resumed run matches an uninterrupted one exactly (CPU)', async () => {
  const full = fresh();
  const dirA = tmp(), dirB = tmp();
  try {
    const a = await train(full, data, opts, { out: dirA });
    // Run B dies while computing step 5 (after the checkpoint of step 4) …
    const dying = fresh();
    await assert.rejects(train(dying, data, opts, { out: dirB, beforeStep: (s) => { if (s === 4) throw new Error('killed'); } }), /killed/);
    assert.equal(readTrainerState(join(dirB, CHECKPOINT_DIR)).step, 4);
    // … and is resumed from its checkpoint in a new model.
    const { model: resumed } = await loadModel(join(dirB, CHECKPOINT_DIR), { backend: new CpuBackend() });
    const b = await train(resumed, data, opts, { out: dirB, resume: true });
    assert.deepEqual(b.records.map((r) => r.step), [5, 6]);
    assert.deepEqual(b.records.map((r) => r.loss), a.records.slice(4).map((r) => r.loss));
    assert.equal(b.finalValLoss, a.finalValLoss);
    const [wa, wb] = [await weightsOf(full), await weightsOf(resumed)];
    wa.forEach((w, i) => assert.deepEqual(wb[i], w, `weight ${i} differs after resume`));
    // The log reads as one run of six steps.
    const steps = readFileSync(join(dirB, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
    assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
    assert.ok(a.records[5].loss < a.records[0].loss, 'six steps should lower the training loss');
  } finally {
    rmSync(dirA, { recursive: true, force: true }); rmSync(dirB, { recursive: true, force: true });
  }
});

test('a NaN stops training with the step and the brick; the last checkpoint stays intact', async () => {
  const m = fresh();
  const dir = tmp();
  try {
    const be = m.backend as CpuBackend;
    const poison = (s: number) => { if (s === 2) be.view(m.weights.get('layers.1.ffn.down.weight')!)[5] = NaN; };
    await assert.rejects(train(m, data, opts, { out: dir, beforeStep: poison }), (e: TrainingError) => {
      assert.ok(e instanceof TrainingError, String(e));
      assert.equal(e.step, 3);
      assert.equal(e.brick, 'layers.1.ffn');
      assert.match(e.message, /step 3: the loss is NaN \(first in layers\.1\.ffn\)/);
      return true;
    });
    assert.equal(readTrainerState(join(dir, CHECKPOINT_DIR)).step, 2);
    const { model } = await loadModel(join(dir, CHECKPOINT_DIR), { backend: new CpuBackend() });
    for (const w of model.weights.values()) assert.ok((await w.toF32()).every(Number.isFinite));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad training input gets clear errors', async () => {
  await assert.rejects(train(fresh(), splitTokens(tokens(30)), opts), (e: unknown) => e instanceof UsageError && /fewer than one window/.test((e as Error).message));
  await assert.rejects(train(fresh(), data, { ...opts, seq: 65 }), (e: unknown) => e instanceof UsageError && /exceeds the model's context of 64/.test((e as Error).message));
  await assert.rejects(train(fresh(), data, { ...opts, lr: 0 }), /learning rate/);
  await assert.rejects(train(fresh(), data, opts, { out: join(tmpdir(), 'bw-none-' + process.pid), resume: true }), /nothing to resume/);
  assert.ok(!existsSync(join(tmpdir(), 'bw-none-' + process.pid, CHECKPOINT_DIR)));
});

test('MatFormer training: cycling trains the nested widths in turn', async () => {
  const { nestedWidthSchedule } = await import('../src/index.ts');
  const nestedSpec = structuredClone(spec);
  for (const l of nestedSpec.layers) for (const s of l.sublayers) if (s.kind === 'ffn') s.nested = [16, 32, 48];
  const m = randomModel(nestedSpec, new CpuBackend(), { seed: 5 });
  const up = () => m.weights.get('layers.0.ffn.up.weight')!.toF32(); // (48, 32): rows are neurons
  const changedRows = (a: Float32Array, b: Float32Array) => Array.from({ length: 48 }, (_, r) => a.subarray(r * 32, r * 32 + 32).some((x, i) => x !== b[r * 32 + i]));
  let before = await up();
  const seen: boolean[][] = [];
  await train(m, data, { ...opts, steps: 3, evalEvery: 0, saveEvery: 0, weightDecay: 0, forwardAt: nestedWidthSchedule(nestedSpec, 'cycle', 1) }, {
    onStep: async () => { const now = await up(); seen.push(changedRows(before, now)); before = now; },
  });
  // Step 1 trains the first 16 neurons only, step 2 the first 32, step 3 all 48.
  for (const [k, width] of [[0, 16], [1, 32], [2, 48]]) {
    assert.ok(seen[k].slice(0, width).every(Boolean), `step ${k + 1}: the first ${width} neurons should change`);
    assert.ok(seen[k].slice(width).every((c) => !c), `step ${k + 1}: neurons past ${width} must not change`);
  }
  assert.throws(() => nestedWidthSchedule(spec, 'cycle', 1), /needs MatFormer FFNs/);
});

test('MatFormer training: sampled widths are not a cycle, and every width gets its share', async () => {
  const { nestedWidthSchedule } = await import('../src/index.ts');
  const nestedSpec = structuredClone(spec);
  for (const l of nestedSpec.layers) for (const s of l.sublayers) if (s.kind === 'ffn') s.nested = [8, 16, 24, 32]; // G = 4, a power of two
  const widthAt = (seed: number, step: number) => {
    const f = nestedWidthSchedule(nestedSpec, 'sample', seed)(step).ffnWidth;
    return typeof f === 'function' ? f(0, 'layers.0.ffn') : f;
  };
  const widths = (seed: number) => Array.from({ length: 400 }, (_, step) => widthAt(seed, step));
  const w = widths(1);
  for (const p of [1, 2, 4, 8]) assert.ok(w.some((x, i) => i >= p && x !== w[i - p]), `period ${p}`);
  for (const n of [8, 16, 24, 32]) {
    const k = w.filter((x) => x === n).length;
    assert.ok(k > 70 && k < 130, `width ${n} drawn ${k} times of 400`);
  }
  assert.deepEqual(widths(1), w, 'the same seed gives the same widths');
  assert.notDeepEqual(widths(2), w);
});

test('blockwise learning rates scale each brick kind; the schedule warms up then decays', async () => {
  const { AdamW, brickKindOf, gradients, warmupCosine } = await import('../src/index.ts');
  assert.deepEqual(['embed.weight', 'lm_head.weight', 'layers.0.attn.q.weight', 'layers.0.attn.k_norm.weight', 'layers.0.attn.v.weight', 'layers.0.attn.o.weight',
    'layers.1.ffn.up.weight', 'layers.1.moe.router.weight', 'layers.1.ffn.norm.weight', 'final_norm.weight'].map(brickKindOf),
  ['embed', 'embed', 'attn_qk', 'attn_qk', 'attn_vo', 'attn_vo', 'ffn', 'ffn', 'norm', 'norm']);
  const m = fresh();
  const before = new Map(await Promise.all([...m.weights].map(async ([n, w]) => [n, await w.toF32()] as const)));
  const opt = new AdamW(m, { lr: 1e-2, weightDecay: 0, blockLr: { ffn: 0, attn_qk: 2 } });
  const { grads } = await gradients(m, trainBatch(data.train, 1, 0, 2, 16));
  await opt.step(grads);
  const moved = async (n: string) => { const a = before.get(n)!, b = await m.weights.get(n)!.toF32(); return Math.max(...a.map((x, i) => Math.abs(x - b[i]))); };
  assert.equal(await moved('layers.0.ffn.up.weight'), 0, 'ffn × 0 must not move');
  // Adam's first step moves every weight by about lr (its sign), so the multiplier shows directly.
  assert.ok(Math.abs((await moved('layers.0.attn.q.weight')) - 2e-2) < 2e-3);
  assert.ok(Math.abs((await moved('layers.0.attn.v.weight')) - 1e-2) < 1e-3);
  assert.throws(() => new AdamW(m, { lr: 1, blockLr: { bogus: 1 } as never }), /unknown brick kind 'bogus'/);
  const lr = warmupCosine({ lr: 1, warmup: 4, total: 14, minLr: 0.1 });
  assert.deepEqual([0, 1, 3].map(lr), [0.25, 0.5, 1]);
  assert.ok(Math.abs(lr(9) - 0.55) < 1e-12 && lr(14) === 0.1 && lr(100) === 0.1);
});
