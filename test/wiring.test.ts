// Layer wiring and norm placement on random-weight specs: serial pre-norm, post-norm, peri-norm and
// parallel attention+FFN, each checked against the formula it names, through captured points.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getBackend, llamaSpec, ops, randomModel, type ModelSpec, type NormPlacement, type Tensor } from '../src/index.ts';

const IDS = Int32Array.from([3, 14, 15, 92, 65]);

function spec(norm: NormPlacement, wiring: 'serial' | 'parallel'): ModelSpec {
  const s = llamaSpec({ vocab: 97, width: 32, layers: 2, heads: 4, kvHeads: 2, ffn: 48, context: 64 });
  return { ...s, layers: s.layers.map((l) => ({ ...l, norm, wiring })) };
}

async function close(a: Tensor, b: Tensor, msg: string) {
  const [x, y] = [await a.toF32(), await b.toF32()];
  assert.equal(x.length, y.length, msg);
  for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - y[i]) < 1e-5, `${msg}[${i}]: ${x[i]} vs ${y[i]}`);
}

test('serial pre-norm: resid.mid = resid.pre + attn(norm(resid.pre))', async () => {
  const m = randomModel(spec('pre', 'serial'), await getBackend('cpu'), { seed: 3, std: 0.2 });
  const { captured: c } = await m.forward(IDS, 1, IDS.length, { capture: ['layers.1.**'] });
  await close(c.get('layers.1.resid.mid')!, ops.add(c.get('layers.1.resid.pre')!, c.get('layers.1.attn.out')!), 'mid');
  await close(c.get('layers.1.attn.in')!, ops.rmsnorm(c.get('layers.1.resid.pre')!, m.weights.get('layers.1.attn.norm.weight')!, 1e-5), 'attn.in');
  await close(c.get('layers.1.resid.post')!, ops.add(c.get('layers.1.resid.mid')!, c.get('layers.1.ffn.out')!), 'post');
});

test('serial post-norm: resid.mid = norm(resid.pre + attn(resid.pre))', async () => {
  const m = randomModel(spec('post', 'serial'), await getBackend('cpu'), { seed: 4, std: 0.2 });
  const { captured: c } = await m.forward(IDS, 1, IDS.length, { capture: ['layers.0.**'] });
  await close(c.get('layers.0.attn.in')!, c.get('layers.0.resid.pre')!, 'post-norm sublayers see the raw residual');
  const sum = ops.add(c.get('layers.0.resid.pre')!, c.get('layers.0.attn.out')!);
  await close(c.get('layers.0.resid.mid')!, ops.rmsnorm(sum, m.weights.get('layers.0.attn.norm.weight')!, 1e-5), 'mid');
});

test('peri-norm: the sublayer output is normalised before the residual add', async () => {
  const m = randomModel(spec('peri', 'serial'), await getBackend('cpu'), { seed: 5, std: 0.2 });
  assert.ok(m.weights.has('layers.0.ffn.out_norm.weight'));
  const { captured: c } = await m.forward(IDS, 1, IDS.length, { capture: ['layers.0.**'] });
  await close(c.get('layers.0.resid.post')!, ops.add(c.get('layers.0.resid.mid')!, c.get('layers.0.ffn.out')!), 'post');
  // ffn.out is the out-normed value: unit RMS times the (all-ones) out_norm weight.
  const y = await c.get('layers.0.ffn.out')!.toF32();
  for (let r = 0; r < IDS.length; r++) {
    let ms = 0;
    for (let j = 0; j < 32; j++) ms += y[r * 32 + j] ** 2;
    assert.ok(Math.abs(ms / 32 - 1) < 1e-3, `row ${r} rms² ${ms / 32}`);
  }
});

test('parallel wiring: resid.post = resid.pre + attn(norm(x)) + ffn(norm(x))', async () => {
  const m = randomModel(spec('pre', 'parallel'), await getBackend('cpu'), { seed: 6, std: 0.2 });
  const { captured: c } = await m.forward(IDS, 1, IDS.length, { capture: ['layers.1.**'] });
  assert.ok(!c.has('layers.1.resid.mid'), 'parallel layers have no mid residual');
  const want = ops.add(ops.add(c.get('layers.1.resid.pre')!, c.get('layers.1.attn.out')!), c.get('layers.1.ffn.out')!);
  await close(c.get('layers.1.resid.post')!, want, 'post');
  await close(c.get('layers.1.ffn.in')!, ops.rmsnorm(c.get('layers.1.resid.pre')!, m.weights.get('layers.1.ffn.norm.weight')!, 1e-5), 'ffn sees the layer input');
});
