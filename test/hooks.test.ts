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
