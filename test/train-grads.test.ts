// Whole-model gradients against PyTorch: for micro-llama, micro-gpt2 and micro-mixtral the loss and
// d loss / d parameter of `gradients` match `grads.safetensors` within 1e-4 relative.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gradients } from '../src/train/loss.ts';
import { MICRO, compareGrads, directionalDerivatives, checkAdamWLosses, dropoutSignature, loadMicro, microSkip } from './micro.ts';
import { CpuBackend, CpuBackend as Cpu } from '../src/index.ts';
import * as op from '../src/tensor/api.ts';

/** micro-gpt2's fixture was computed in train mode (dropout 0.1, torch's random masks); say so. */
function trainModeSkip(name: string): string | undefined {
  const sig = dropoutSignature(name);
  return sig ? `the ${name} fixture was computed with dropout active: ${sig}; torch's random masks cannot be reproduced (the directional finite-difference test below checks this model instead)` : undefined;
}

for (const name of MICRO) {
  test(`${name}: loss and every parameter's gradient match PyTorch (CPU)`, { skip: microSkip(name) ?? trainModeSkip(name) }, async () => {
    for (const backend of [new CpuBackend({ reference: true }), new CpuBackend()]) {
      const { model, batch, reference, json } = await loadMicro(name, backend);
      const { loss, grads } = await gradients(model, batch);
      assert.ok(Math.abs(loss - json.loss) < 1e-4, `${backend.name}: loss ${loss} vs PyTorch ${json.loss}`);
      assert.equal(grads.size, model.weights.size);
      const worst = await compareGrads(grads, reference);
      assert.ok(worst.rel < 1e-4, `${backend.name}: gradient of ${worst.name} differs by ${worst.rel} relative`);
    }
  });
}

test('micro-gpt2: the whole-model gradient agrees with finite differences along random directions', { skip: microSkip('micro-gpt2') }, async () => {
  // GPT-2 specific paths (LayerNorm with bias, gelu_tanh, learned positions, tied embeddings, biases)
  // checked without the fixture's dropout.
  const be = new Cpu({ reference: true });
  const { model, batch } = await loadMicro('micro-gpt2', be);
  const { grads } = await gradients(model, batch);
  for (const [trial, { fd, grad }] of (await directionalDerivatives(model, batch, grads)).entries())
    assert.ok(Math.abs(fd - grad) / Math.abs(grad) < 2e-3, `trial ${trial}: finite difference ${fd} vs gradient ${grad}`);
  for (const g of grads.values()) op.dispose(g);
});

test('the micro-gpt2 fixture shows the dropout signature the skip above reports', { skip: microSkip('micro-gpt2') }, () => {
  // Positions 0..31 appear in both batch rows; embedding dropout p = 0.1 zeroes both with p = 0.01,
  // so about 1% of their wpe gradients are exactly 0. Eval-mode gradients have none.
  assert.match(dropoutSignature('micro-gpt2') ?? '', /exactly zero/);
  assert.equal(dropoutSignature('micro-llama'), undefined);
});

for (const name of ['micro-llama', 'micro-mixtral', 'micro-gpt2']) {
  test(`${name}: five AdamW steps give PyTorch's losses`, { skip: microSkip(name) ?? trainModeSkip(name) }, async () => {
    await checkAdamWLosses(name, new Cpu());
  });
}

test('MoE load-balancing loss: HF Mixtral definition, and its gradient reaches the routers', { skip: microSkip('micro-mixtral') }, async () => {
  const be = new Cpu({ reference: true });
  const { model, batch } = await loadMicro('micro-mixtral', be);
  const { B, T } = batch;
  const { auxLoss, captured, logits } = await model.forward(batch.ids, B, T, { auxLoss: true, capture: ['layers.*.moe.router'] });
  assert.ok(auxLoss, 'a MoE model returns the auxiliary loss when asked');
  // By hand: E · Σₑ (picks of e / tokens) · (mean probability of e), over every layer's tokens.
  const E = 4, k = 2;
  const counts = new Float64Array(E), probSum = new Float64Array(E);
  let tokens = 0;
  for (const t of captured.values()) {
    const lg = await t.toF32();
    for (let n = 0; n < lg.length / E; n++) {
      const row = Array.from(lg.subarray(n * E, n * E + E));
      const mx = Math.max(...row), ex = row.map((x) => Math.exp(x - mx)), z = ex.reduce((p, x) => p + x, 0);
      const p = ex.map((x) => x / z);
      p.forEach((x, e) => { probSum[e] += x; });
      const order = p.map((x, e) => [x, e] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
      for (let j = 0; j < k; j++) counts[order[j][1]]++;
      tokens++;
    }
  }
  let want = 0;
  for (let e = 0; e < E; e++) want += (counts[e] / tokens) * (probSum[e] / tokens);
  want *= E;
  const got = (await auxLoss.toF32())[0];
  assert.ok(Math.abs(got - want) < 1e-5, `aux loss ${got} vs ${want}`);
  logits.dispose();
  // With a coefficient, the router weights get a gradient from it: compare with and without.
  const plain = await gradients(model, batch);
  const withAux = await gradients(model, batch, { auxCoef: 10 });
  assert.ok(Math.abs(withAux.loss - plain.loss - 10 * want) < 1e-4, `loss ${withAux.loss} should be ${plain.loss} + 10 × ${want}`);
  const r0 = await plain.grads.get('layers.0.moe.router.weight')!.toF32(), r1 = await withAux.grads.get('layers.0.moe.router.weight')!.toF32();
  assert.ok(r0.some((x, i) => Math.abs(x - r1[i]) > 1e-6), 'the auxiliary loss must change the router gradient');
  const q0 = await plain.grads.get('layers.0.attn.q.weight')!.toF32(), q1 = await withAux.grads.get('layers.0.attn.q.weight')!.toF32();
  assert.ok(q0.some((x, i) => Math.abs(x - q1[i]) > 1e-7), 'and, through the router input, the layers below');
});
