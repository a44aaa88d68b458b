// Skip policies, early exit and self-speculative decoding on WebGPU (the bundled model): a skip removes
// the same dispatches as on the CPU, and speculative greedy decoding reproduces the golden dense tokens.
// Short runs: on SwiftShader (CI) each pass takes a good fraction of a second.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPolicy, loadModel, speculativeGenerate } from '../src/index.ts';
import { withGpu } from './gpu-helpers.ts';
import { BUNDLED, fixture, readGolden } from './helpers.ts';

test('WebGPU: a static skip removes its dispatches; speculative greedy equals dense greedy', (t) => withGpu(t, async (gpu) => {
  const { model } = await loadModel(BUNDLED, { backend: gpu });
  const fx = fixture('tiny-llama');
  assert.ok(!('skip' in fx));
  const p = readGolden(fx.golden).prompts[0];
  const ids = Int32Array.from(p.ids);
  const count = async (opts: object) => {
    const d0 = gpu.stats.dispatches;
    const r = await model.forward(ids, 1, ids.length, opts);
    await r.logits.toF32();
    r.logits.dispose();
    return gpu.stats.dispatches - d0;
  };
  const plan = (await createPolicy(model, 'static:layers.2-3.ffn')).session().plan('prefill');
  for (const fuse of [false, true]) {
    const dense = await count({ fuse });
    const skip = await count({ ...plan, fuse });
    if (fuse) assert.equal(dense - skip, 2 * 2, 'two fused gated FFNs: norm·gate·up·silu·product, then down·residual each');
    else assert.equal(dense - skip, 2 * 7, 'two gated FFNs: norm, three matmuls, silu, product, residual add each');
  }

  for (const [spec, k] of [['static:layers.4-7', 2], ['early-exit:0.5', 3]] as [string, number][]) {
    const draft = await createPolicy(model, spec);
    const r = await speculativeGenerate(model, p.ids, { maxNewTokens: 8, draft, draftLength: k, stopTokens: [] });
    assert.deepEqual(r.tokens, p.greedy_next_40.slice(0, 8), spec);
    assert.ok(r.drafted > 0);
  }
}));
