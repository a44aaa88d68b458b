// Whole-model gradients on WebGPU: for micro-llama and micro-mixtral the loss and every d loss / d weight
// of `gradients` match PyTorch's (grads.safetensors) within 1e-4, as train-grads.test.ts checks on the CPU.
// micro-gpt2's fixture was taken with dropout on, so its WebGPU gradients are checked against the CPU
// reference instead, and along random directions by finite differences. AdamW steps and the training loop
// follow PyTorch / the CPU run. Skips where no adapter exists.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHECKPOINT_DIR, CpuBackend, llamaSpec, loadModel, randomModel, splitTokens, train, type Backend, type Tensor } from '../src/index.ts';
import { gradients } from '../src/train/loss.ts';
import * as op from '../src/tensor/api.ts';
import { compareGrads, directionalDerivatives, checkAdamWLosses, loadMicro, microSkip } from './micro.ts';
import { withGpu } from './gpu-helpers.ts';

const disposeAll = (m: Map<string, Tensor>) => { for (const t of m.values()) op.dispose(t); };

/** Max |x| of a tensor. */
const maxAbs = async (t: Tensor) => (await t.toF32()).reduce((m, x) => Math.max(m, Math.abs(x)), 0);

// NOTE: d loss / d (key bias) is exactly zero: adding q·b to every score of a softmax row changes nothing.
// Both backends return rounding noise there (about 1e-11 against 1e-4 for the key weights), so a
// relative comparison of two noises means nothing; those are checked to be zero on their layer's scale.
const ZERO_GRAD = /^(.*\.attn)\.k\.bias$/;

for (const name of ['micro-llama', 'micro-mixtral']) {
  test(`${name}: loss and every parameter's gradient match PyTorch (WebGPU)`, { skip: microSkip(name) }, (t) => withGpu(t, async (gpu) => {
    const { model, batch, reference, json } = await loadMicro(name, gpu);
    const { loss, grads } = await gradients(model, batch);
    assert.ok(Math.abs(loss - json.loss) < 1e-4, `webgpu: loss ${loss} vs PyTorch ${json.loss}`);
    assert.equal(grads.size, model.weights.size);
    const worst = await compareGrads(grads, reference);
    assert.ok(worst.rel < 1e-4, `webgpu: gradient of ${worst.name} differs by ${worst.rel} relative`);
    disposeAll(grads);
    disposeAll(model.weights);
  }));
}

test('micro-gpt2: loss and every parameter\'s gradient on WebGPU match the CPU reference', { skip: microSkip('micro-gpt2') }, (t) => withGpu(t, async (gpu) => {
  // The CPU reference is itself checked against finite differences (train-grads.test.ts); this covers the
  // GPT-2 paths (LayerNorm with bias, gelu_tanh, learned positions, tied embeddings) on the WGSL kernels.
  const cpu = await loadMicro('micro-gpt2', new CpuBackend({ reference: true }));
  const want = await gradients(cpu.model, cpu.batch);
  const { model, batch } = await loadMicro('micro-gpt2', gpu);
  const got = await gradients(model, batch);
  assert.ok(Math.abs(got.loss - want.loss) < 1e-4, `webgpu: loss ${got.loss} vs CPU ${want.loss}`);
  assert.equal(got.grads.size, model.weights.size);
  const compared = new Map([...want.grads].filter(([name]) => !ZERO_GRAD.test(name)));
  const worst = await compareGrads(got.grads, { weights: compared } as Parameters<typeof compareGrads>[1]);
  assert.ok(worst.rel < 1e-4, `webgpu: gradient of ${worst.name} differs from the CPU reference by ${worst.rel} relative`);
  let zeros = 0;
  for (const name of want.grads.keys()) {
    const m = ZERO_GRAD.exec(name);
    if (!m) continue;
    const scale = await maxAbs(want.grads.get(`${m[1]}.k.weight`)!);
    for (const [be, g] of [['webgpu', got.grads], ['cpu', want.grads]] as const)
      assert.ok((await maxAbs(g.get(name)!)) < 1e-4 * scale, `${be}: gradient of ${name} should be zero on the scale of its key weight's (${scale})`);
    zeros++;
  }
  assert.ok(zeros > 0, 'expected GPT-2 key biases');
  disposeAll(got.grads);
  disposeAll(want.grads);
  disposeAll(model.weights);
}));

test('micro-gpt2: the WebGPU gradient agrees with finite differences along random directions', { skip: microSkip('micro-gpt2') }, (t) => withGpu(t, async (gpu) => {
  // d/dh loss(w + h·u) against ⟨∇loss, u⟩ for random u, as train-grads.test.ts does on the CPU.
  const be: Backend = gpu;
  const { model, batch } = await loadMicro('micro-gpt2', be);
  const { grads } = await gradients(model, batch);
  for (const [trial, { fd, grad }] of (await directionalDerivatives(model, batch, grads)).entries())
    assert.ok(Math.abs(fd - grad) / Math.abs(grad) < 2e-3, `trial ${trial}: finite difference ${fd} vs gradient ${grad}`);
  disposeAll(grads);
  disposeAll(model.weights);
}));

for (const name of ['micro-llama', 'micro-mixtral']) {
  test(`${name}: five AdamW steps give PyTorch's losses (WebGPU)`, { skip: microSkip(name) }, (t) => withGpu(t, async (gpu) => {
    await checkAdamWLosses(name, gpu);
  }));
}

test('the training loop on WebGPU follows the CPU run (losses, validation, checkpoint)', (t) => withGpu(t, async (gpu) => {
  const spec = llamaSpec({ vocab: 64, width: 32, layers: 2, heads: 4, kvHeads: 2, ffn: 48, context: 32 });
  const data = splitTokens(Array.from({ length: 3000 }, (_, i) => (i * 5 + (i >> 3)) % 64));
  const opts = { steps: 4, batch: 2, seq: 16, seed: 3, lr: 3e-3, warmup: 1, evalEvery: 2, evalBatches: 2, clip: 1 };
  const dir = mkdtempSync(join(tmpdir(), 'bw-gpu-train-'));
  try {
    const onCpu = await train(randomModel(spec, new CpuBackend(), { seed: 5 }), data, opts);
    const onGpu = await train(randomModel(spec, gpu, { seed: 5 }), data, opts, { out: dir });
    onGpu.records.forEach((r, i) => {
      assert.ok(Math.abs(r.loss - onCpu.records[i].loss) < 1e-4, `step ${r.step}: webgpu loss ${r.loss} vs cpu ${onCpu.records[i].loss}`);
      if (r.valLoss !== undefined) assert.ok(Math.abs(r.valLoss - onCpu.records[i].valLoss!) < 1e-4, `step ${r.step}: validation`);
    });
    const { model } = await loadModel(join(dir, CHECKPOINT_DIR), { backend: new CpuBackend() });
    assert.equal(model.numParams, randomModel(spec, new CpuBackend()).numParams);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}));
