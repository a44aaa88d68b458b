// The architecture zoo as spec options: per-sublayer norm placement, LayerNorm Scaling, QK(V)-norm,
// low-rank / block-diagonal / nested (MatFormer) FFNs, and the zoo presets. Checked: validation errors
// with paths, weight declarations and costs, forward formulas (each variant against the dense model it
// stands for), KV-cache decoding, MatFormer slicing, and whole-model gradients against finite differences.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CpuBackend, Model, SpecError, UsageError, brickCosts, declareWeights, ops, randomModel, sliceMatFormer, specProblems,
  validateSpec, zooSpec, NORM_SCHEMES, type AttnSpec, type FfnSpec, type ModelSpec, type Tensor, type ZooOptions,
} from '../src/index.ts';
import { gradients, languageModelLoss, type Batch } from '../src/train/loss.ts';
import { rand } from './helpers.ts';

const be = new CpuBackend({ reference: true });
const DIMS = { vocab: 50, width: 16, layers: 2, heads: 2, kvHeads: 1, ffn: 24, context: 16 } as const;
const zoo = (o: Partial<ZooOptions> = {}) => zooSpec({ ...DIMS, scheme: 'pre', ...o });
const IDS = Int32Array.from([3, 14, 15, 42, 7]);

async function maxDiff(a: Tensor, b: Tensor): Promise<number> {
  const [x, y] = [await a.toF32(), await b.toF32()];
  assert.deepEqual(a.shape, b.shape);
  let d = 0;
  for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i] - y[i]));
  return d;
}

const logits = async (m: Model, opts = {}) => (await m.forward(IDS, 1, IDS.length, opts)).logits;

/** A copy of `spec` whose FFN sublayers are rewritten by `fn`. */
function mapFfns(spec: ModelSpec, fn: (f: FfnSpec) => FfnSpec): ModelSpec {
  return { ...spec, layers: spec.layers.map((l) => ({ ...l, sublayers: l.sublayers.map((s) => (s.kind === 'ffn' ? fn(s) : s)) })) };
}

const plain = (f: FfnSpec): FfnSpec => {
  const { rank: _r, blocks: _b, nested: _n, ...rest } = f;
  return rest;
};

// ---------------------------------------------------------------- validation

test('validation: bad variants are reported with their paths, all at once', () => {
  const s = zoo();
  const ffn = s.layers[0].sublayers[1] as FfnSpec;
  const attn = s.layers[1].sublayers[0] as AttnSpec;
  const bad: ModelSpec = {
    ...s,
    layers: [
      { ...s.layers[0], normScale: -1, sublayers: [{ ...attn, qkNorm: 'qq' as 'qk' }, { ...ffn, rank: 4, blocks: 5 }] },
      { ...s.layers[1], wiring: 'parallel', sublayers: [{ ...attn, norm: 'post' }, { ...ffn, nested: [16, 8, 20] }] },
    ],
  };
  const p = specProblems(bad);
  const has = (re: RegExp) => assert.ok(p.some((x) => re.test(x)), `no problem matching ${re} in:\n${p.join('\n')}`);
  has(/^layers\[0\]\.normScale: expected a finite number > 0/);
  has(/^layers\[0\]\.sublayers\[0\]\.qkNorm: expected 'qk' \| 'qkv'/);
  has(/^layers\[0\]\.sublayers\[1\]: expected at most one of rank \| blocks \| nested .*found rank and blocks/);
  has(/^layers\[0\]\.sublayers\[1\]\.blocks: expected a divisor of dModel \(16\), found 5/);
  has(/^layers\[0\]\.sublayers\[1\]\.blocks: expected a divisor of hidden \(24\), found 5/);
  has(/^layers\[1\]\.sublayers\[0\]\.norm: expected 'pre', 'peri' or 'none' with parallel wiring, found "post"/);
  has(/^layers\[1\]\.sublayers\[1\]\.nested\[1\]: expected a width > nested\[0\] \(16\)/);
  has(/^layers\[1\]\.sublayers\[1\]\.nested\[2\]: expected the full width hidden \(24\) as the last width, found 20/);
  assert.throws(() => validateSpec(bad), (e: unknown) => e instanceof SpecError && e.code === 'E_SPEC' && e.problems.length === p.length);
});

test('validation: variant fields on the wrong kind, bad ranks and placements', () => {
  const s = zoo({ ffnVariant: { experts: 2, topK: 1 } });
  const moe = s.layers[0].sublayers[1];
  const bad = {
    ...s,
    layers: [{ ...s.layers[0], sublayers: [{ ...s.layers[0].sublayers[0], rank: 2, norm: 'middle' }, { ...moe, nested: [24] }] },
      { ...s.layers[1], sublayers: [{ kind: 'ffn', hidden: 24, gated: false, activation: 'relu', bias: false, rank: 0, qkNorm: 'qk' }] }],
  };
  const p = specProblems(bad);
  const has = (re: RegExp) => assert.ok(p.some((x) => re.test(x)), `no problem matching ${re} in:\n${p.join('\n')}`);
  has(/^layers\[0\]\.sublayers\[0\]\.rank: expected absent on a 'attn' sublayer, found 2/);
  has(/^layers\[0\]\.sublayers\[0\]\.norm: expected 'pre' \| 'post' \| 'peri' \| 'none' \(or absent: the layer's\), found "middle"/);
  has(/^layers\[0\]\.sublayers\[1\]\.nested: expected absent on a 'moe' sublayer/);
  has(/^layers\[1\]\.sublayers\[0\]\.rank: expected an integer > 0, found 0/);
  has(/^layers\[1\]\.sublayers\[0\]\.qkNorm: expected absent on a 'ffn' sublayer/);
  assert.equal(p.length, 5, p.join('\n'));
});

test('zooSpec: every scheme gives a valid spec; bad options are usage errors', () => {
  for (const scheme of NORM_SCHEMES) validateSpec(zoo({ scheme }));
  assert.throws(() => zoo({ scheme: 'post', parallel: true }), (e: unknown) => e instanceof UsageError && /parallel/.test(e.message));
  assert.throws(() => zoo({ scheme: 'hybrid', parallel: true }), UsageError);
  assert.throws(() => zoo({ pattern: ['attn+mlp'] }), (e: unknown) => e instanceof UsageError && /pattern\[0\]/.test(e.message));
  assert.throws(() => zoo({ pattern: ['ffn'], attnEvery: 2 }), UsageError);
  assert.throws(() => zoo({ heads: 3 }), UsageError);
  assert.throws(() => zoo({ ffnVariant: { blocks: 5 } }), (e: unknown) => e instanceof SpecError && /layers\[0\]\.sublayers\[1\]\.blocks/.test(e.message));
  validateSpec(zoo({ scheme: 'peri', parallel: true }));
});

test('zooSpec: scheme layouts (Mix-LN split, HybridNorm overrides, LayerNorm Scaling factors, PAR patterns)', () => {
  const mix = zoo({ scheme: 'mix', layers: 8 });
  assert.deepEqual(mix.layers.map((l) => l.norm), ['post', 'post', 'pre', 'pre', 'pre', 'pre', 'pre', 'pre']);
  assert.deepEqual(zoo({ scheme: 'mix', layers: 4, mixPostFraction: 0.5 }).layers.map((l) => l.norm), ['post', 'post', 'pre', 'pre']);
  const hy = zoo({ scheme: 'hybrid' });
  assert.deepEqual(hy.layers[0].sublayers.map((s) => [s.kind, s.norm]), [['attn', 'none'], ['ffn', 'post']]);
  assert.equal(hy.layers[0].sublayers[0].kind === 'attn' && hy.layers[0].sublayers[0].qkNorm, 'qkv');
  const lns = zoo({ scheme: 'lns', layers: 4 });
  assert.deepEqual(lns.layers.map((l) => l.normScale), [1, 1 / Math.sqrt(2), 1 / Math.sqrt(3), 0.5]);
  assert.equal(zoo({ scheme: 'post' }).finalNorm, false);
  const par = zoo({ layers: 5, attnEvery: 2 });
  assert.deepEqual(par.layers.map((l) => l.sublayers.map((s) => s.kind).join('+')), ['attn+ffn', 'ffn', 'attn+ffn', 'ffn', 'attn+ffn']);
  const pat = zoo({ layers: 4, pattern: ['attn+ffn+ffn', 'ffn'] });
  assert.deepEqual(pat.layers.map((l) => l.sublayers.length), [3, 1, 3, 1]);
});

// ---------------------------------------------------------------- declarations and costs

test('weight declarations: QK(V)-norm over the head dim (with LayerNorm bias), placements per sublayer', () => {
  const names = (s: ModelSpec) => new Map(declareWeights(s).map((d) => [d.name, d.shape]));
  const qk = names(zoo({ qkNorm: 'qk' }));
  assert.deepEqual(qk.get('layers.0.attn.q_norm.weight'), [8]);
  assert.deepEqual(qk.get('layers.1.attn.k_norm.weight'), [8]);
  assert.equal(qk.has('layers.0.attn.v_norm.weight'), false);
  assert.equal(qk.has('layers.0.attn.q_norm.bias'), false);
  const ln = names(zoo({ qkNorm: 'qkv', norm: 'layernorm' }));
  for (const w of ['q', 'k', 'v']) for (const part of ['weight', 'bias']) assert.deepEqual(ln.get(`layers.0.attn.${w}_norm.${part}`), [8], `${w}_norm.${part}`);
  const hy = names(zoo({ scheme: 'hybrid' }));
  assert.equal(hy.has('layers.0.attn.norm.weight'), false, 'HybridNorm attention has no input norm');
  assert.deepEqual(hy.get('layers.0.ffn.norm.weight'), [16]);
  assert.deepEqual(hy.get('layers.0.attn.v_norm.weight'), [8]);
  // A sublayer's own placement wins over its layer's.
  const s = zoo();
  s.layers[1].sublayers[1].norm = 'peri';
  s.layers[1].sublayers[0].norm = 'none';
  const o = names(s);
  assert.ok(o.has('layers.1.ffn.out_norm.weight') && !o.has('layers.0.ffn.out_norm.weight') && !o.has('layers.1.attn.norm.weight') && o.has('layers.0.attn.norm.weight'));
});

test('weight declarations: low-rank, block-diagonal and nested FFNs', () => {
  const names = (s: ModelSpec) => new Map(declareWeights(s).map((d) => [d.name, d.shape]));
  const lr = names(zoo({ ffnVariant: { rank: 4 } }));
  assert.deepEqual(lr.get('layers.0.ffn.gate.a.weight'), [4, 16]);
  assert.deepEqual(lr.get('layers.0.ffn.gate.b.weight'), [24, 4]);
  assert.deepEqual(lr.get('layers.0.ffn.down.a.weight'), [4, 24]);
  assert.deepEqual(lr.get('layers.0.ffn.down.b.weight'), [16, 4]);
  assert.equal(lr.has('layers.0.ffn.up.weight'), false);
  const lrBias = names(mapFfns(zoo({ ffnVariant: { rank: 4 } }), (f) => ({ ...f, bias: true })));
  assert.deepEqual(lrBias.get('layers.0.ffn.up.b.bias'), [24]);
  assert.equal(lrBias.has('layers.0.ffn.up.a.bias'), false);
  const bd = names(mapFfns(zoo({ ffnVariant: { blocks: 4 } }), (f) => ({ ...f, bias: true })));
  assert.deepEqual(bd.get('layers.0.ffn.up.weight'), [4, 6, 4]);
  assert.deepEqual(bd.get('layers.0.ffn.down.weight'), [4, 4, 6]);
  assert.deepEqual(bd.get('layers.0.ffn.down.bias'), [16]);
  assert.deepEqual([...names(zoo({ ffnVariant: { nested: [8, 16, 24] } }))], [...names(zoo())], 'nested FFNs store the full matrices');
});

test('brickCosts: params match the declared weights and FLOPs follow each variant', () => {
  const C = 16, F = 24, D = 8;
  const cost = (s: ModelSpec, name: string) => brickCosts(s, 8).find((c) => c.name === name)!;
  for (const spec of [zoo({ scheme: 'hybrid' }), zoo({ scheme: 'peri', ffnVariant: { rank: 4 } }), zoo({ ffnVariant: { blocks: 4 }, qkNorm: 'qk', norm: 'layernorm' }), zoo({ scheme: 'lns', attnEvery: 2, layers: 3 })]) {
    const total = brickCosts(spec).reduce((p, c) => p + c.params, 0);
    assert.equal(total, randomModel(spec, be).numParams, spec.family);
  }
  const dense = cost(zoo(), 'layers.0.ffn');
  assert.equal(dense.flopsPerToken, 3 * 2 * C * F + 5 * C);
  assert.equal(cost(zoo({ ffnVariant: { rank: 4 } }), 'layers.0.ffn').flopsPerToken, 3 * 2 * 4 * (C + F) + 5 * C);
  assert.equal(cost(zoo({ ffnVariant: { blocks: 4 } }), 'layers.0.ffn').flopsPerToken, (3 * 2 * C * F) / 4 + 5 * C);
  assert.equal(cost(zoo({ ffnVariant: { rank: 4 } }), 'layers.0.ffn').params, 3 * 4 * (C + F) + C);
  const attn = cost(zoo(), 'layers.0.attn').flopsPerToken;
  assert.equal(cost(zoo({ qkNorm: 'qkv' }), 'layers.0.attn').flopsPerToken, attn + 5 * D * (2 + 1 + 1));
  // HybridNorm attention: no input norm (5C fewer), QKV-norm added.
  assert.equal(cost(zoo({ scheme: 'hybrid' }), 'layers.0.attn').flopsPerToken, attn - 5 * C + 5 * D * 4);
  // LayerNorm Scaling multiplies the norm output: C more in layers > 0 (layer 0's factor is 1).
  assert.equal(cost(zoo({ scheme: 'lns' }), 'layers.1.ffn').flopsPerToken, dense.flopsPerToken + C);
  assert.equal(cost(zoo({ scheme: 'lns' }), 'layers.0.ffn').flopsPerToken, dense.flopsPerToken);
});

test('randomModel: norm weights (q/k/v norms included) are 1, biases 0', async () => {
  const m = randomModel(zoo({ qkNorm: 'qkv', norm: 'layernorm' }), be, { seed: 2 });
  for (const [name, w] of m.weights) {
    const x = await w.toF32();
    if (/_norm\.weight$|\.norm\.weight$/.test(name)) assert.ok(x.every((v) => v === 1), name);
    else if (name.endsWith('.bias')) assert.ok(x.every((v) => v === 0), name);
    else assert.ok(x.some((v) => v !== 0 && v !== 1), name);
  }
});

// ---------------------------------------------------------------- forward formulas

test('every scheme and variant runs forward to finite logits', async () => {
  const variants: (ZooOptions['ffnVariant'] | undefined)[] = [undefined, { rank: 4 }, { blocks: 4 }, { nested: [8, 16, 24] }, { experts: 3, topK: 2 }];
  for (const scheme of NORM_SCHEMES) for (const ffnVariant of variants) for (const parallel of [false, true]) {
    if (parallel && ['post', 'mix', 'hybrid'].includes(scheme)) continue;
    const m = randomModel(zoo({ scheme, ffnVariant, parallel, layers: 3, attnEvery: 2 }), be, { seed: 5, std: 0.2 });
    const l = await (await logits(m)).toF32();
    assert.equal(l.length, IDS.length * 50);
    assert.ok(l.every(Number.isFinite), `${scheme} ${JSON.stringify(ffnVariant)} parallel=${parallel}`);
  }
});

test('HybridNorm: attention sees the raw residual, q/k/v are normalised per head, the FFN is post-normed', async () => {
  const m = randomModel(zoo({ scheme: 'hybrid' }), be, { seed: 3, std: 0.3 });
  const { captured: c } = await m.forward(IDS, 1, IDS.length, { capture: ['layers.1.**'] });
  assert.equal(await maxDiff(c.get('layers.1.attn.in')!, c.get('layers.1.resid.pre')!), 0);
  assert.ok(await maxDiff(c.get('layers.1.resid.mid')!, ops.add(c.get('layers.1.resid.pre')!, c.get('layers.1.attn.out')!)) < 1e-6);
  const post = ops.rmsnorm(ops.add(c.get('layers.1.resid.mid')!, c.get('layers.1.ffn.out')!), m.weights.get('layers.1.ffn.norm.weight')!, 1e-5);
  assert.ok(await maxDiff(c.get('layers.1.resid.post')!, post) < 1e-6);
  // Norm weights are 1, so every head vector of q, k (rope keeps lengths) and v has RMS 1.
  for (const w of ['q', 'k', 'v']) {
    const t = c.get(`layers.1.attn.${w}`)!;
    const x = await t.toF32(), D = t.shape[3];
    for (let i = 0; i < x.length; i += D) {
      let ss = 0;
      for (let d = 0; d < D; d++) ss += x[i + d] ** 2;
      assert.ok(Math.abs(Math.sqrt(ss / D) - 1) < 1e-3, `${w} head vector ${i / D}: rms ${Math.sqrt(ss / D)}`);
    }
  }
});

test('QK-norm equals the same attention fed per-head-normalised q and k (hooks on the plain model)', async () => {
  // Without rope the q/k points are the normalised projections: patch them into a model without
  // QK-norm (same weights) and the outputs must agree.
  const noRope = (s: ModelSpec): ModelSpec => ({ ...s, layers: s.layers.map((l) => ({ ...l, sublayers: l.sublayers.map((x) => (x.kind === 'attn' ? { ...x, rope: false } : x)) })) });
  const withQk = randomModel(noRope(zoo({ qkNorm: 'qk', norm: 'layernorm' })), be, { seed: 8, std: 0.3 });
  for (const [n, w] of withQk.weights) if (/[qk]_norm/.test(n)) withQk.weights.set(n, be.upload((await w.toF32()).map((_, i) => 0.5 + 0.1 * i + (n.endsWith('bias') ? 0.2 : 0)), w.shape, 'f32'));
  const base = noRope(zoo({ norm: 'layernorm' }));
  const plainModel = new Model(base, be, new Map([...withQk.weights].filter(([n]) => !/[qk]_norm/.test(n))));
  const hooks = ['q', 'k'].map((w) => ({
    point: `layers.*.attn.${w}`,
    fn: (t: Tensor, name: string) => ops.layernorm(t, withQk.weights.get(`${name}_norm.weight`)!, withQk.weights.get(`${name}_norm.bias`)!, 1e-5),
  }));
  assert.ok(await maxDiff(await logits(withQk), await logits(plainModel, { hooks })) < 1e-5);
});

test('LayerNorm Scaling: a layer\'s input norms are scaled by 1/sqrt(l); per-sublayer placements override the layer\'s', async () => {
  const m = randomModel(zoo({ scheme: 'lns', layers: 3 }), be, { seed: 4, std: 0.3 });
  const { captured: c } = await m.forward(IDS, 1, IDS.length, { capture: ['layers.2.**'] });
  const n = ops.scale(ops.rmsnorm(c.get('layers.2.resid.mid')!, m.weights.get('layers.2.ffn.norm.weight')!, 1e-5), 1 / Math.sqrt(3));
  assert.ok(await maxDiff(c.get('layers.2.ffn.in')!, n) < 1e-6);

  const s = zoo();
  s.layers[0].sublayers[1].norm = 'peri';
  s.layers[0].sublayers[0].norm = 'post';
  const o = randomModel(s, be, { seed: 6, std: 0.3 });
  const { captured: d } = await o.forward(IDS, 1, IDS.length, { capture: ['layers.0.**'] });
  assert.equal(await maxDiff(d.get('layers.0.attn.in')!, d.get('layers.0.resid.pre')!), 0);
  const mid = ops.rmsnorm(ops.add(d.get('layers.0.resid.pre')!, d.get('layers.0.attn.out')!), o.weights.get('layers.0.attn.norm.weight')!, 1e-5);
  assert.ok(await maxDiff(d.get('layers.0.resid.mid')!, mid) < 1e-6);
  assert.ok(await maxDiff(d.get('layers.0.ffn.in')!, ops.rmsnorm(d.get('layers.0.resid.mid')!, o.weights.get('layers.0.ffn.norm.weight')!, 1e-5)) < 1e-6);
  assert.ok(await maxDiff(d.get('layers.0.resid.post')!, ops.add(d.get('layers.0.resid.mid')!, d.get('layers.0.ffn.out')!)) < 1e-6);
  // Peri: the FFN output went through its out_norm (weight 1), so every row has RMS 1.
  const y = await d.get('layers.0.ffn.out')!.toF32();
  for (let t = 0; t < IDS.length; t++) {
    let ss = 0;
    for (let i = 0; i < 16; i++) ss += y[t * 16 + i] ** 2;
    assert.ok(Math.abs(Math.sqrt(ss / 16) - 1) < 1e-3, `row ${t}`);
  }
});

test('low-rank FFN equals the dense FFN with W = B·A', async () => {
  const lr = randomModel(mapFfns(zoo({ ffnVariant: { rank: 4 } }), (f) => ({ ...f, bias: true })), be, { seed: 9, std: 0.3 });
  const dense = new Map<string, Tensor>();
  for (const [n, w] of lr.weights) {
    const m = /^(.*)\.([ab])\.(weight|bias)$/.exec(n);
    if (!m) dense.set(n, w);
    else if (m[2] === 'b' && m[3] === 'weight') dense.set(`${m[1]}.weight`, ops.matmul(w, lr.weights.get(`${m[1]}.a.weight`)!));
    else if (m[3] === 'bias') dense.set(`${m[1]}.bias`, w);
  }
  const d = new Model(mapFfns(lr.spec, plain), be, dense);
  assert.ok(await maxDiff(await logits(lr), await logits(d)) < 1e-5);
});

test('block-diagonal FFN equals the dense FFN with those blocks on the diagonal', async () => {
  const k = 4;
  const bd = randomModel(mapFfns(zoo({ ffnVariant: { blocks: k } }), (f) => ({ ...f, bias: true })), be, { seed: 10, std: 0.3 });
  const dense = new Map<string, Tensor>();
  for (const [n, w] of bd.weights) {
    if (w.shape.length !== 3) { dense.set(n, w); continue; }
    const [, o, i] = w.shape;
    const x = await w.toF32();
    const full = new Float32Array(k * o * k * i);
    for (let b = 0; b < k; b++) for (let r = 0; r < o; r++) for (let c = 0; c < i; c++) full[(b * o + r) * (k * i) + b * i + c] = x[(b * o + r) * i + c];
    dense.set(n, be.upload(full, [k * o, k * i], 'f32'));
  }
  const d = new Model(mapFfns(bd.spec, plain), be, dense);
  assert.ok(await maxDiff(await logits(bd), await logits(d)) < 1e-5);
});

test('QK-norm and LayerNorm Scaling: decoding with a KV cache gives the full pass\'s logits', async () => {
  const m = randomModel(zoo({ scheme: 'lns', qkNorm: 'qkv', attnEvery: 2, layers: 3 }), be, { seed: 12, std: 0.3 });
  const full = await (await logits(m)).toF32();
  const cache = m.newCache(1, 16);
  await m.forward(IDS.subarray(0, 4), 1, 4, { cache });
  const step = await (await m.forward(IDS.subarray(4), 1, 1, { cache, pos0: [4] })).logits.toF32();
  let d = 0;
  for (let v = 0; v < 50; v++) d = Math.max(d, Math.abs(step[v] - full[4 * 50 + v]));
  assert.ok(d < 1e-5, `cached step differs by ${d}`);
});

// ---------------------------------------------------------------- MatFormer

test('MatFormer: running at width m equals a plain FFN model built from the sliced weights', async () => {
  const parent = randomModel(mapFfns(zoo({ ffnVariant: { nested: [8, 16, 24] }, layers: 3 }), (f) => ({ ...f, bias: true })), be, { seed: 11, std: 0.3 });
  for (const m of [8, 16]) {
    const w = new Map<string, Tensor>();
    for (const [n, t] of parent.weights) {
      const hit = /\.ffn\.(gate|up|down)\.(weight|bias)$/.exec(n);
      if (!hit) w.set(n, t);
      else if (hit[1] !== 'down') w.set(n, ops.slice(t, 0, 0, m));
      else w.set(n, hit[2] === 'weight' ? ops.slice(t, 1, 0, m) : t);
    }
    const small = new Model(mapFfns(parent.spec, (f) => ({ ...plain(f), hidden: m })), be, w);
    assert.equal(await maxDiff(await logits(parent, { ffnWidth: m }), await logits(small)), 0, `width ${m}`);
  }
  assert.ok(await maxDiff(await logits(parent, { ffnWidth: 8 }), await logits(parent)) > 1e-3, 'narrower widths compute something else');
  assert.equal(await maxDiff(await logits(parent, { ffnWidth: 24 }), await logits(parent)), 0);
});

test('sliceMatFormer: a Mix\'n\'Match submodel equals the parent run at those widths', async () => {
  const parent = randomModel(zoo({ scheme: 'peri', ffnVariant: { nested: [8, 16, 24] }, layers: 3 }), be, { seed: 13, std: 0.3 });
  const widths = [16, 8, 24];
  const sub = await sliceMatFormer(parent, widths);
  assert.deepEqual(sub.spec.layers.map((l) => (l.sublayers[1] as FfnSpec).hidden), widths);
  assert.ok(sub.spec.layers.every((l) => (l.sublayers[1] as FfnSpec).nested === undefined));
  assert.deepEqual(sub.weights.get('layers.1.ffn.down.weight')!.shape, [16, 8]);
  assert.ok(sub.numParams < parent.numParams);
  const want = await logits(parent, { ffnWidth: (layer: number) => widths[layer] });
  assert.equal(await maxDiff(await logits(sub), want), 0);
  // Standalone: the parent's weights can go away.
  const one = await sliceMatFormer(parent, 8);
  const expected = await (await logits(parent, { ffnWidth: 8 })).toF32();
  for (const w of parent.weights.values()) w.dispose();
  assert.deepEqual(await (await logits(one)).toF32(), expected);
});

test('MatFormer: widths that are not nested are clear usage errors', async () => {
  const m = randomModel(zoo({ ffnVariant: { nested: [8, 24] } }), be, { seed: 1 });
  await assert.rejects(logits(m, { ffnWidth: 12 }), (e: unknown) => e instanceof UsageError && /layers\.0\.ffn: width 12 asked, expected one of its nested widths 8, 24/.test(e.message));
  await assert.rejects(logits(randomModel(zoo(), be), { ffnWidth: 8 }), (e: unknown) => e instanceof UsageError && /not nested/.test(e.message));
  await assert.rejects(sliceMatFormer(m, [8]), (e: unknown) => e instanceof UsageError && /expected 2 widths/.test(e.message));
  await assert.rejects(sliceMatFormer(m, 16), UsageError);
});

// ---------------------------------------------------------------- gradients

const BATCH: Batch = { ids: Int32Array.from([3, 14, 15, 42, 7, 9, 26, 5, 35, 8]), targets: Int32Array.from([14, 15, 42, 7, 1, 26, 5, 35, 8, -1]), B: 2, T: 5 };

/** d/dh loss(w + h·u) by finite differences against ⟨∇loss, u⟩, for random directions u over every weight. */
async function directionalCheck(model: Model, forward: { ffnWidth?: number } = {}, label = '') {
  const { grads } = await gradients(model, BATCH, { forward });
  const moe = model.spec.layers.some((l) => l.sublayers.some((s) => s.kind === 'moe'));
  if (!moe) assert.equal(grads.size, model.weights.size, `${label}: a gradient for every weight`);
  const r = rand(17);
  for (let trial = 0; trial < 2; trial++) {
    const dirs = new Map<string, Float32Array>();
    let dot = 0;
    for (const [name, w] of model.weights) {
      const u = Float32Array.from({ length: w.size }, () => r() - 0.5);
      dirs.set(name, u);
      const g = grads.get(name);
      if (!g) continue;
      const ga = await g.toF32();
      for (let i = 0; i < u.length; i++) dot += ga[i] * u[i];
    }
    // NOTE: the loss is f32, so a central difference with small h drowns in rounding and a large h in
    // curvature; the five-point stencil (Richardson on h and 2h) cancels the h² term, allowing h = 2e-3.
    const h = 2e-3;
    const lossAt = async (sign: number) => {
      const moved = new Map<string, Tensor>();
      for (const [name, w] of model.weights) {
        const base = await w.toF32(), u = dirs.get(name)!;
        moved.set(name, be.upload(base.map((x, i) => x + sign * h * u[i]), w.shape, 'f32'));
      }
      const { loss } = await languageModelLoss(new Model(model.spec, be, moved), BATCH, { forward });
      const v = (await loss.toF32())[0];
      for (const t of moved.values()) t.dispose();
      return v;
    };
    const d1 = ((await lossAt(1)) - (await lossAt(-1))) / (2 * h);
    const d2 = ((await lossAt(2)) - (await lossAt(-2))) / (4 * h);
    const num = (4 * d1 - d2) / 3;
    assert.ok(Math.abs(num - dot) / Math.abs(dot) < 2e-3, `${label} trial ${trial}: finite difference ${num} vs gradient ${dot}`);
  }
  for (const g of grads.values()) g.dispose();
}

for (const scheme of NORM_SCHEMES) {
  test(`gradients: ${scheme} scheme agrees with finite differences`, async () => {
    const m = randomModel(zoo({ scheme, layers: 3, mixPostFraction: 0.34 }), be, { seed: 21, std: 0.3 });
    await directionalCheck(m, {}, scheme);
  });
}

const GRAD_CASES: [string, Partial<ZooOptions>][] = [
  ['low-rank FFN', { ffnVariant: { rank: 4 } }],
  ['block-diagonal FFN', { ffnVariant: { blocks: 4 } }],
  ['nested FFN at full width', { ffnVariant: { nested: [8, 16, 24] } }],
  ['QK-norm with LayerNorm', { qkNorm: 'qk', norm: 'layernorm' }],
  ['QKV-norm, parallel peri-norm', { qkNorm: 'qkv', scheme: 'peri', parallel: true }],
  ['PAR pattern with LayerNorm Scaling', { scheme: 'lns', layers: 3, pattern: ['attn+ffn', 'ffn+ffn', 'ffn'] }],
  ['HybridNorm with low-rank FFN', { scheme: 'hybrid', ffnVariant: { rank: 3 } }],
  ['MoE under Mix-LN', { scheme: 'mix', mixPostFraction: 0.5, ffnVariant: { experts: 3, topK: 2 } }],
];
for (const [label, o] of GRAD_CASES) {
  test(`gradients: ${label} agrees with finite differences`, async () => {
    const m = randomModel(zoo(o), be, { seed: 22, std: 0.3 });
    await directionalCheck(m, {}, label);
  });
}

test('gradients: a nested FFN trained at width m agrees with finite differences and leaves the other neurons alone', async () => {
  const m = randomModel(mapFfns(zoo({ ffnVariant: { nested: [8, 16, 24] } }), (f) => ({ ...f, bias: true })), be, { seed: 23, std: 0.3 });
  await directionalCheck(m, { ffnWidth: 16 }, 'nested at 16');
  const { grads } = await gradients(m, BATCH, { forward: { ffnWidth: 8 } });
  const up = await grads.get('layers.0.ffn.up.weight')!.toF32();
  const down = await grads.get('layers.0.ffn.down.weight')!.toF32();
  assert.ok(up.subarray(8 * 16).every((v) => v === 0) && up.subarray(0, 8 * 16).some((v) => v !== 0), 'up: rows 8.. get no gradient');
  for (let r = 0; r < 16; r++) assert.ok(down.subarray(r * 24 + 8, r * 24 + 24).every((v) => v === 0), `down row ${r}: columns 8.. get no gradient`);
  assert.ok((await grads.get('layers.0.ffn.up.bias')!.toF32()).subarray(8).every((v) => v === 0));
});
