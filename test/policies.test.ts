// Skip and exit policies on the bundled model (and tiny-mixtral for moe-topk): spec parsing and its
// errors, dispatches removed by a skip, FFN-SkipLLM's and block influence's choices against an
// independent similarity computation, early exit's KV-cache fill, and the policy paths of perplexity.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createPolicy, generate, getBackend, loadModel, ops, parsePolicy, formatPolicy, perplexity, PolicyError, SkipMeter,
  type Backend, type Model,
} from '../src/index.ts';
import { policyPass } from '../src/runtime/generate.ts';
import { BUNDLED, fixture, readGolden } from './helpers.ts';

const PROMPT = [1031, 824, 259, 555, 14, 599, 309, 259, 664];

let cached: { be: Backend; model: Model } | undefined;
async function bundled() {
  if (!cached) {
    const be = await getBackend('cpu');
    cached = { be, model: (await loadModel(BUNDLED, { backend: be })).model };
  }
  return cached;
}

/** Per-op dispatch counts of one call. */
async function countOps(be: Backend, fn: () => Promise<unknown>): Promise<Record<string, number>> {
  const before: Record<string, number> = { ...be.stats.perOp };
  await fn();
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(be.stats.perOp) as [string, number][]) if (v - (before[k] ?? 0)) out[k] = v - (before[k] ?? 0);
  return out;
}

const diff = (a: Record<string, number>, b: Record<string, number>) => {
  const out: Record<string, number> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) if ((a[k] ?? 0) !== (b[k] ?? 0)) out[k] = (a[k] ?? 0) - (b[k] ?? 0);
  return out;
};

/** Mean over tokens of cos(a_t, b_t) for (1, T, C) host arrays. */
function meanCos(a: Float32Array, b: Float32Array, C: number): number {
  let s = 0;
  const T = a.length / C;
  for (let t = 0; t < T; t++) {
    let d = 0, na = 0, nb = 0;
    for (let c = 0; c < C; c++) { d += a[t * C + c] * b[t * C + c]; na += a[t * C + c] ** 2; nb += b[t * C + c] ** 2; }
    s += d / Math.sqrt(na * nb);
  }
  return s / T;
}

test('policy specs parse to a canonical form, and malformed ones get clear errors', () => {
  for (const s of ['dense', 'static:layers.2-5.ffn,layers.7.attn,layers.1', 'ffn-skip:0.25,warmup=8', 'ffn-skip:0.5,warmup=4,keep-first=2,keep-last=1',
    'block-influence:0.25,unit=block,keep-first=0,keep-last=0,calib-tokens=4096', 'early-exit:0.9,min-layer=2', 'early-exit:0.5,min-layer=4,every=2', 'moe-topk:1'])
    assert.equal(formatPolicy(parsePolicy(s)), s);
  const bad: [string, RegExp][] = [
    ['ffn-skip:1.5', /fraction: expected a number in \[0, 1\], found '1\.5'/],
    ['ffn-skip:-0.1', /fraction: expected a number in \[0, 1\]/],
    ['block-influence:2', /fraction: expected a number in \[0, 1\]/],
    ['ffn-skip', /missing the fraction/],
    ['ffn-skip:0.2,warmup=0', /warmup: expected an integer >= 1/],
    ['ffn-skip:0.2,speed=3', /unknown option 'speed=3'/],
    ['block-influence:0.2,unit=head', /unit: expected ffn \| attn \| sublayer \| block/],
    ['early-exit:0', /threshold: expected a probability in \(0, 1\]/],
    ['moe-topk:0', /top-k: expected an integer >= 1/],
    ['skip-all:0.5', /unknown policy 'skip-all'/],
    ['static:', /empty item/],
    ['static:ffn', /'ffn' is not a sublayer or block name/],
  ];
  for (const [s, re] of bad) assert.throws(() => parsePolicy(s), (e: unknown) => e instanceof PolicyError && re.test(e.message) && /hint:/.test(e.message), s);
});

test('policy specs that do not fit the model are refused with the reason', async () => {
  const { model } = await bundled();
  await assert.rejects(createPolicy(model, 'static:layers.12.ffn'), /layer 12 does not exist: the model has 8 layers \(0\.\.7\)/);
  await assert.rejects(createPolicy(model, 'static:layers.6-99.ffn'), /layers 6-99 run past the last layer: the model has 8 layers \(0\.\.7\)/);
  await assert.rejects(createPolicy(model, 'static:layers.0-99999999'), /layers 0-99999999 run past the last layer/);
  await assert.rejects(createPolicy(model, 'static:layers.5-2.ffn'), (e: unknown) => e instanceof PolicyError && /the range 5-2 runs backwards/.test((e as Error).message) && /hint: write it low to high: 2-5/.test((e as Error).message));
  await assert.rejects(createPolicy(model, 'static:layers.3.mlp'), /'layers\.3\.mlp' names no sublayer or block[\s\S]*hint: .*\(attn, ffn\)/);
  await assert.rejects(createPolicy(model, 'moe-topk:1'), /the model has no MoE sublayers/);
  await assert.rejects(createPolicy(model, 'early-exit:0.9,min-layer=8'), /min-layer 8 leaves no layer to exit at/);
  await assert.rejects(createPolicy(model, 'block-influence:0.25'), /needs calibration text/);
});

test('early exit checks the logit lens only at min-layer and every N layers after it', async () => {
  const { be, model } = await bundled();
  const cache = model.newCache(1, 16);
  await model.forward(Int32Array.from(PROMPT), 1, PROMPT.length, { cache });
  // A threshold no lens reaches: nothing exits, and the lens (one head matmul) runs only where checked.
  const plan = (await createPolicy(model, 'early-exit:1,min-layer=3,every=2')).session().plan('decode');
  const ops = await countOps(be, () => model.forward(Int32Array.from([42]), 1, 1, { cache, pos0: [PROMPT.length], logitRows: [0], ...plan }));
  // Checks after layers 3, 5 and 7 of 8 (never after the last): 3 lens heads + the real head.
  assert.equal(ops.matmul, 8 * 7 + 3 + 1);
  cache.dispose();
});

test('a skipped sublayer costs no dispatch: the ops of exactly those sublayers disappear', async () => {
  const { be, model } = await bundled();
  const ids = Int32Array.from(PROMPT);
  const dense = await countOps(be, () => model.forward(ids, 1, ids.length));
  const plan = (await createPolicy(model, 'static:layers.2.attn,layers.5-6.ffn')).session().plan('prefill');
  const skipped = await countOps(be, () => model.forward(ids, 1, ids.length, plan));
  // One attention sublayer: norm, q/k/v/o matmuls, rope on q and k, two cache writes, attention, residual add.
  // Two gated FFNs: norm, gate/up/down matmuls, silu, product, residual add, each.
  assert.deepEqual(diff(dense, skipped), { rmsnorm: 3, matmul: 4 + 6, rope: 2, kv_write: 2, attention: 1, add: 3, silu: 2, mul: 2 });
  const block = (await createPolicy(model, 'static:layers.7')).session().plan('prefill');
  const whole = await countOps(be, () => model.forward(ids, 1, ids.length, block));
  assert.deepEqual(diff(dense, whole), { rmsnorm: 2, matmul: 7, rope: 2, kv_write: 2, attention: 1, add: 2, silu: 1, mul: 1 });
  // The meter reports the same plan as a quarter of the FFN FLOPs and an eighth of the attention FLOPs.
  const meter = new SkipMeter(model.spec, 64);
  meter.record(await model.forward(ids, 1, ids.length, plan), ids.length, { cached: false });
  assert.ok(Math.abs(meter.fraction.ffn - 0.25) < 1e-12 && Math.abs(meter.fraction.attn - 0.125) < 1e-12, JSON.stringify(meter.fraction));
});

test('ffn-skip measures the warm-up densely, then skips the FFNs with the highest residual similarity', async () => {
  const { model } = await bundled();
  const warmup = 3;
  const policy = await createPolicy(model, `ffn-skip:0.25,warmup=${warmup}`);
  const r = await generate(model, [PROMPT], { maxNewTokens: 12, policy, stopTokens: [] });
  // Independently: the warm-up saw the prompt and the first warmup-1 generated tokens (one pass each).
  const seen = [...PROMPT, ...r.tokens[0].slice(0, warmup - 1)];
  const { captured } = await model.forward(Int32Array.from(seen), 1, seen.length, { capture: ['layers.*.resid.mid', 'layers.*.resid.post'] });
  const C = model.spec.dModel;
  const sims: { layer: number; sim: number }[] = [];
  for (let l = 1; l <= 6; l++) // keep-first and keep-last default to 1 for 8 layers
    sims.push({ layer: l, sim: meanCos(await captured.get(`layers.${l}.resid.mid`)!.toF32(), await captured.get(`layers.${l}.resid.post`)!.toF32(), C) });
  sims.sort((a, b) => b.sim - a.sim);
  assert.ok(sims[1].sim - sims[2].sim > 1e-4, 'the ranking is clear enough to test');
  assert.deepEqual(r.skipping, sims.slice(0, 2).map((s) => `layers.${s.layer}.ffn`).sort());
  // Warm-up passes run densely: 9 prompt tokens + 2 decode steps dense, 9 decode steps at 2/8 FFNs skipped.
  const dense = PROMPT.length + warmup - 1;
  assert.ok(Math.abs(r.skipped.ffn - (0.25 * 9) / (dense + 9)) < 1e-9, JSON.stringify(r.skipped));
});

test('a pass under a policy keeps what the caller captured alive, even where the session captured and disposed the same tensors', async () => {
  const { model } = await bundled();
  const policy = await createPolicy(model, 'ffn-skip:0.25,warmup=8');
  const session = policy.session();
  assert.ok(session.plan('decode').capture?.includes('layers.3.resid.post'), 'the warm-up plan captures layers.3.resid.post');
  const meter = new SkipMeter(model.spec, 64);
  const ids = Int32Array.from(PROMPT);
  const want = await model.forward(ids, 1, ids.length, { capture: ['layers.*.resid.post'] });
  const r = await policyPass(model, session, meter, 'prefill', ids, 1, ids.length, { capture: ['layers.*.resid.post', 'layers.3.resid.pre'] }, ids.length);
  for (let l = 0; l < model.spec.layers.length; l++) {
    const t = r.captured.get(`layers.${l}.resid.post`)!;
    assert.ok(!t.isDisposed, `layers.${l}.resid.post is alive`);
    assert.deepEqual(await t.toF32(), await want.captured.get(`layers.${l}.resid.post`)!.toF32(), `layers.${l}.resid.post`);
  }
  // resid.pre of layer 3 is resid.post of layer 2, which the session also measured.
  assert.ok(!r.captured.get('layers.3.resid.pre')!.isDisposed);
  // The session still saw its points: a whole prompt of warm-up counts once (one predicted token).
  assert.ok(session.plan('decode').capture, 'still warming up after one pass');
});

test('block influence skips the units with the lowest 1 − cos(in, out) on the calibration text', async () => {
  const { model } = await bundled();
  const calib = Array.from({ length: 300 }, (_, i) => (i * 7919 + 13) % 4000 + 50);
  const policy = await createPolicy(model, 'block-influence:0.25,unit=block,calib-tokens=300', { calibration: calib });
  const skip = policy.session().skipping;
  // Independently: one window of 256 tokens and one of 44, resid.pre vs resid.post of every layer.
  const C = model.spec.dModel;
  const bi: { layer: number; v: number }[] = [];
  const parts = [calib.slice(0, 256), calib.slice(256)];
  const caps = await Promise.all(parts.map((p) => model.forward(Int32Array.from(p), 1, p.length, { capture: ['layers.*.resid.pre', 'layers.*.resid.post'] })));
  for (let l = 0; l < 8; l++) {
    let s = 0;
    for (const [i, p] of parts.entries()) s += meanCos(await caps[i].captured.get(`layers.${l}.resid.pre`)!.toF32(), await caps[i].captured.get(`layers.${l}.resid.post`)!.toF32(), C) * p.length;
    bi.push({ layer: l, v: 1 - s / calib.length });
  }
  bi.sort((a, b) => a.v - b.v);
  assert.ok(bi[2].v - bi[1].v > 1e-4, 'the ranking is clear enough to test');
  const want = bi.slice(0, 2).flatMap((b) => [`layers.${b.layer}.attn`, `layers.${b.layer}.ffn`]).sort();
  assert.deepEqual([...skip].sort(), want);
});

test('early exit: the exit logits are the logit lens, and skipped layers write K/V computed from the exit residual', async () => {
  const { be, model } = await bundled();
  const P = PROMPT.length;
  const cache = model.newCache(1, 32);
  await model.forward(Int32Array.from(PROMPT), 1, P, { cache });
  const exit = async (layer: number, resid: import('../src/index.ts').Tensor) => (layer === 1 ? model.lens(resid) : undefined);
  const counts = await countOps(be, async () => {
    const r = await model.forward(Int32Array.from([42]), 1, 1, { cache, pos0: [P], exit, capture: ['layers.1.resid.post'] });
    assert.equal(r.exitLayer, 2);
    assert.deepEqual(r.skipped, [2, 3, 4, 5, 6, 7].flatMap((l) => [`layers.${l}.attn`, `layers.${l}.ffn`]));
    const h = r.captured.get('layers.1.resid.post')!;
    assert.deepEqual(await r.logits.toF32(), await model.lens(h).toF32());
    // Layer 5's cache at position P holds rope(k_proj(norm(h))) and v_proj(norm(h)).
    const n = ops.rmsnorm(h, model.weights.get('layers.5.attn.norm.weight')!, 1e-5);
    const k = ops.rope(ops.matmul(n, model.weights.get('layers.5.attn.k.weight')!, true).reshape([1, 1, 2, 32]), [P], model.invFreq);
    const v = ops.matmul(n, model.weights.get('layers.5.attn.v.weight')!, true).reshape([1, 1, 2, 32]);
    const ck = await cache.slots.get('layers.5.attn')!.k.toF32(), cv = await cache.slots.get('layers.5.attn')!.v.toF32();
    const [kh, vh] = [await k.toF32(), await v.toF32()];
    for (let head = 0; head < 2; head++) for (let d = 0; d < 32; d++) {
      const at = (head * 32 + P) * 32 + d; // (B, K, S, D) with S = 32
      assert.ok(Math.abs(ck[at] - kh[head * 32 + d]) < 1e-5 && Math.abs(cv[at] - vh[head * 32 + d]) < 1e-5);
    }
  });
  // Two full layers (7 matmuls each, the lens check's head included in the test's own lens calls),
  // and K/V projections only for the six skipped layers.
  assert.equal(counts.attention, 2);
  assert.equal(counts.kv_write, 2 * 8);
  cache.dispose();
});

test('perplexity: the per-sequence and per-token paths equal the dense score when nothing is skipped', async () => {
  const { model } = await bundled();
  // Real text: the golden prompts and their greedy continuations, one after another.
  const fx = fixture('tiny-llama');
  assert.ok(!('skip' in fx));
  const ids = readGolden(fx.golden).prompts.flatMap((p) => [...p.ids, ...p.greedy_next_40]);
  const dense = await perplexity(model, ids, { window: 64, maxTokens: 160 });
  for (const spec of ['ffn-skip:0,warmup=5', 'early-exit:1']) {
    const r = await perplexity(model, ids, { window: 64, maxTokens: 160, policy: await createPolicy(model, spec) });
    assert.equal(r.tokensScored, dense.tokensScored);
    assert.ok(Math.abs(r.ppl / dense.ppl - 1) < 1e-6, `${spec}: ${r.ppl} vs ${dense.ppl}`);
    assert.equal(r.skipped.all, 0);
  }
  const skip = await perplexity(model, ids, { window: 64, maxTokens: 160, policy: await createPolicy(model, 'static:layers.3-4.ffn') });
  assert.ok(skip.ppl > dense.ppl && Math.abs(skip.skipped.ffn - 0.25) < 1e-12, `${skip.ppl} vs ${dense.ppl}, ${JSON.stringify(skip.skipped)}`);
});

test('moe-topk overrides the experts per token (tiny-mixtral)', async (t) => {
  const fx = fixture('tiny-mixtral');
  if ('skip' in fx) return t.skip(fx.skip);
  const be = await getBackend('cpu');
  const { model } = await loadModel(fx.model, { backend: be });
  const ids = Int32Array.from(PROMPT);
  const dense = await model.forward(ids, 1, ids.length);
  const same = await model.forward(ids, 1, ids.length, (await createPolicy(model, 'moe-topk:2')).session().plan('prefill'));
  assert.deepEqual(await same.logits.toF32(), await dense.logits.toF32());
  const one = await createPolicy(model, 'moe-topk:1');
  const ops1 = await countOps(be, () => model.forward(ids, 1, ids.length, one.session().plan('prefill')));
  const ops2 = await countOps(be, () => model.forward(ids, 1, ids.length));
  // Each token visits one expert instead of two: half the expert rows, same number of routers.
  assert.ok((ops1.matmul ?? 0) <= (ops2.matmul ?? 0));
  assert.notDeepEqual(await (await model.forward(ids, 1, ids.length, one.session().plan('prefill'))).logits.toF32(), await dense.logits.toF32());
  await assert.rejects(createPolicy(model, 'moe-topk:5'), /top-k 5 exceeds the 4 experts/);
  const r = await generate(model, [PROMPT], { maxNewTokens: 4, policy: one, stopTokens: [] });
  assert.ok(r.skipped.ffn > 0.3 && r.skipped.ffn < 0.5, JSON.stringify(r.skipped));
});
