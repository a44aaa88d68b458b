// Activation points, capture patterns, hooks and sublayer gates on the bundled model.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compilePattern, getBackend, loadModel, ops } from '../src/index.ts';
import { BUNDLED } from './helpers.ts';

const IDS = Int32Array.from([1031, 824, 259, 555, 14, 599]);

test('point patterns: *, ** and numeric ranges', () => {
  const m = compilePattern('layers.*.ffn.out');
  assert.ok(m('layers.3.ffn.out') && !m('layers.3.attn.out') && !m('layers.3.x.ffn.out'));
  const r = compilePattern('layers.2-5.attn.*');
  assert.ok(r('layers.2.attn.out') && r('layers.5.attn.in') && !r('layers.6.attn.out') && !r('layers.1.attn.out'));
  const any = compilePattern('**.pattern');
  assert.ok(any('layers.0.attn.pattern') && !any('layers.0.attn.out'));
  // Ranges compare numbers (a huge range costs nothing), and a backwards one is refused.
  const wide = compilePattern('layers.10-4000000000.ffn');
  assert.ok(wide('layers.10.ffn') && wide('layers.123456.ffn') && !wide('layers.9.ffn') && !wide('layers.4000000001.ffn') && !wide('layers.010.ffn'));
  assert.throws(() => compilePattern('layers.5-2.ffn'), /the range 5-2 runs backwards[\s\S]*hint: write it low to high: 2-5/);
});

test('capture returns exactly the asked points, with their shapes', async () => {
  const { model } = await loadModel(BUNDLED, { backend: await getBackend('cpu') });
  const { captured } = await model.forward(IDS, 1, IDS.length, { capture: ['layers.*.resid.post', 'layers.1.attn.pattern', 'layers.0.ffn.act', 'logits'] });
  assert.deepEqual([...captured.keys()].sort(), ['layers.0.ffn.act', 'layers.1.attn.pattern', 'logits', ...Array.from({ length: 8 }, (_, i) => `layers.${i}.resid.post`)].sort());
  assert.deepEqual(captured.get('layers.1.attn.pattern')!.shape, [1, 8, 6, 6]);
  assert.deepEqual(captured.get('layers.0.ffn.act')!.shape, [1, 6, 688]);
  const p = await captured.get('layers.1.attn.pattern')!.toF32();
  for (let h = 0; h < 8; h++) for (let t = 0; t < 6; t++) {
    let s = 0;
    for (let k = 0; k < 6; k++) { s += p[(h * 6 + t) * 6 + k]; if (k > t) assert.equal(p[(h * 6 + t) * 6 + k], 0, 'future key visible'); }
    assert.ok(Math.abs(s - 1) < 1e-5);
  }
  // resid.post of the last layer, through the final norm and head, is the logits: consistent with a plain run.
  const plain = await (await model.forward(IDS, 1, IDS.length)).logits.toF32();
  assert.deepEqual(await captured.get('logits')!.toF32(), plain);
});

test('a hook that zeroes a sublayer output equals gating that sublayer off, and the gate saves its dispatches', async () => {
  const be = await getBackend('cpu');
  const { model } = await loadModel(BUNDLED, { backend: be });
  const zeroed = await (await model.forward(IDS, 1, IDS.length, { hooks: [{ point: 'layers.5.ffn.out', fn: (t) => ops.scale(t, 0) }] })).logits.toF32();
  const d0 = be.stats.dispatches;
  await model.forward(IDS, 1, IDS.length);
  const dense = be.stats.dispatches - d0;
  const d1 = be.stats.dispatches;
  const skipped = await (await model.forward(IDS, 1, IDS.length, { gate: (name) => name !== 'layers.5.ffn' })).logits.toF32();
  const gated = be.stats.dispatches - d1;
  for (let i = 0; i < zeroed.length; i++) assert.ok(Math.abs(zeroed[i] - skipped[i]) < 1e-5);
  // The FFN's norm, gate/up/down matmuls, activation, product and residual add: 7 dispatches gone.
  assert.equal(dense - gated, 7);
  const plain = await (await model.forward(IDS, 1, IDS.length)).logits.toF32();
  assert.notDeepEqual(skipped, plain);
});

test('a pass split by prefix and forwardFrom at any layer gives the one-part logits and cache, bit for bit on the CPU', async () => {
  const be = await getBackend('cpu');
  const { model } = await loadModel(BUNDLED, { backend: be });
  const L = model.spec.layers.length, P = 4, T = IDS.length - P;
  // Reference: the prompt, then the remaining tokens in one pass through the cache.
  const ref = model.newCache(1, IDS.length);
  (await model.forward(IDS.subarray(0, P), 1, P, { cache: ref })).logits.dispose();
  const want = await (await model.forward(IDS.subarray(P), 1, T, { cache: ref, pos0: [P] })).logits.toF32();
  const wantK = await ref.slots.get('layers.7.attn')!.k.toF32();
  for (const s of [0, 1, 4, L]) {
    const cache = model.newCache(1, IDS.length);
    (await model.forward(IDS.subarray(0, P), 1, P, { cache })).logits.dispose();
    const { resid, captured } = await model.prefix(IDS.subarray(P), 1, T, s, { cache, pos0: [P], capture: ['layers.*.resid.post'] });
    assert.deepEqual(resid.shape, [1, T, model.spec.dModel]);
    assert.equal(captured.size, s, `layers 0..${s - 1} ran`);
    const r = await model.forwardFrom(s, resid, 1, T, { cache, pos0: [P] });
    assert.deepEqual(await r.logits.toF32(), want, `split at layer ${s}`);
    assert.deepEqual(await cache.slots.get('layers.7.attn')!.k.toF32(), wantK, `split at layer ${s}: cache`);
    assert.ok((await resid.toF32()).length > 0, 'the residual stays the caller\'s');
    resid.dispose();
    cache.dispose();
  }
  ref.dispose();
  const x = be.zeros([1, 2, model.spec.dModel], 'f32');
  await assert.rejects(model.forwardFrom(L + 1, x, 1, 2), /layer must be an integer in 0\.\.8, found 9/);
  await assert.rejects(model.forwardFrom(2, x, 1, 3), /the residual must be f32 \[1, 3, 256\].*found f32 \[1, 2, 256\]/);
  await assert.rejects(model.prefix(IDS, 1, IDS.length, -1), /layers must be an integer in 0\.\.8, found -1/);
});
