// Sampling rules and their statistics, generation options (stop tokens, streaming, context errors),
// spec validation, and the native checkpoint round trip on the bundled model.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ContextLengthError, Rng, acceptDraft, acceptOrResample, SpecError, UsageError, drawToken, generate, getBackend, loadModel, ops, sampleToken, samplingDistribution,
  saveNative, specProblems, validateSpec, type ModelSpec, NonFiniteError, createPolicy, speculativeGenerate, perplexity,
} from '../src/index.ts';
import { BUNDLED, readGolden, fixture } from './helpers.ts';
import { referenceSamplingDistribution } from '../src/runtime/sampling.ts';

test('sampling distribution: temperature, top-k, top-p', () => {
  const logits = Float32Array.from([2, 1, 0, -1, 3]);
  const d = samplingDistribution(logits, 0, 5, { temperature: 0.5 });
  assert.equal(d.ids.length, 5);
  const e = Array.from(logits, (x) => Math.exp(x / 0.5));
  const z = e.reduce((a, b) => a + b);
  d.ids.forEach((id, i) => assert.ok(Math.abs(d.probs[i] - e[id] / z) < 1e-12));
  assert.deepEqual(Array.from(samplingDistribution(logits, 0, 5, { topK: 2 }).ids), [4, 0]);
  // top-p keeps the smallest prefix reaching p: p(4)≈0.64, p(4)+p(0)≈0.87.
  assert.deepEqual(Array.from(samplingDistribution(logits, 0, 5, { topP: 0.8 }).ids), [4, 0]);
  assert.deepEqual(Array.from(samplingDistribution(logits, 0, 5, { topP: 0.5 }).ids), [4]);
  assert.equal(sampleToken(logits, 0, 5, { greedy: true }, new Rng(1)), 4);
});

test('sampling distribution equals sorting the whole vocabulary, for ties, peaked, flat and masked logits', () => {
  const rng = new Rng(77);
  for (const V of [1, 2, 7, 300, 5000]) {
    for (const shape of ['flat', 'peaked', 'ties', 'spread', 'masked'] as const) {
      const logits = Float32Array.from({ length: V }, (_, i) => {
        const u = rng.next();
        if (shape === 'ties') { const v = Math.floor(u * 6) - 3; return v === 0 && i % 2 ? -0 : v; } // few distinct values, -0 among the zeros
        if (shape === 'spread') return u * 200; // most tokens are e^-64 times less likely than the top one, or less
        if (shape === 'masked') return i % 3 === 1 && i > 0 ? -Infinity : u; // a third of the vocabulary masked out
        return shape === 'flat' ? u * 2 : (u < 0.01 ? 12 : 0) + u * 6 - Math.log(1 + i);
      });
      for (const o of [{}, { temperature: 0.7 }, { topK: 1 }, { topK: 5 }, { topK: Math.ceil(V / 3) }, { topP: 0.3 }, { topP: 0.9 }, { topP: 0.999 },
        { temperature: 1.3, topK: 40, topP: 0.8 }, { topK: V + 3, topP: 0.95 }]) {
        const got = samplingDistribution(logits, 0, V, o), want = referenceSamplingDistribution(logits, 0, V, o);
        const what = `V ${V} ${shape} ${JSON.stringify(o)}`;
        assert.deepEqual(Array.from(got.ids), Array.from(want.ids), `${what}: ids`);
        got.probs.forEach((p, i) => assert.ok(Math.abs(p - want.probs[i]) <= 1e-12, `${what}: p[${i}] ${p} vs ${want.probs[i]}`));
        // The same logits in a float64 array take the comparison sort, not the packed keys.
        assert.deepEqual(Array.from(samplingDistribution(Float64Array.from(logits), 0, V, o).ids), Array.from(want.ids), `${what}: ids from float64 logits`);
      }
    }
  }
});

test('sampling draws follow the distribution (chi-square, fixed seed)', () => {
  const logits = Float32Array.from([0.5, 1.5, -0.3, 1.0, 0.0, -2.0]);
  const opts = { temperature: 0.8, topK: 5 };
  const { ids, probs } = samplingDistribution(logits, 0, 6, opts);
  const rng = new Rng(1234);
  const n = 40000;
  const counts = new Map<number, number>();
  for (let i = 0; i < n; i++) { const t = sampleToken(logits, 0, 6, opts, rng); counts.set(t, (counts.get(t) ?? 0) + 1); }
  assert.ok(!counts.has(5), 'token outside top-k was drawn');
  let chi = 0;
  ids.forEach((id, i) => { const exp = n * probs[i]; chi += ((counts.get(id) ?? 0) - exp) ** 2 / exp; });
  // 4 degrees of freedom: P(chi² > 18.47) = 0.001.
  assert.ok(chi < 18.47, `chi-square ${chi}`);
  // Same seed, same draws.
  const a = new Rng(9), b = new Rng(9);
  for (let i = 0; i < 10; i++) assert.equal(a.next(), b.next());
});

test('a draw walks the kept tokens in vocabulary order, each over its probability of [0, 1); the sample op is that draw per row', async () => {
  const rng = new Rng(5);
  const V = 400, N = 20000;
  const logits = Float32Array.from({ length: V }, (_, i) => (i % 9 === 0 ? 2 : 0) + rng.next() * 3 - (i % 50 === 7 ? Infinity : 0));
  for (const o of [{ temperature: 0.9 }, { topK: 25 }, { topP: 0.7 }, { temperature: 1.4, topK: 60, topP: 0.9 }]) {
    const { ids, probs } = referenceSamplingDistribution(logits, 0, V, o);
    const p = new Map(Array.from(ids, (id, i) => [id, probs[i]]));
    // u on a grid over [0, 1): the drawn ids rise with u (vocabulary order), and each id takes its share of the grid.
    const counts = new Map<number, number>();
    let prev = -1;
    for (let j = 0; j < N; j++) {
      const t = drawToken(logits, 0, V, o, (j + 0.5) / N);
      assert.ok(t >= prev, `${JSON.stringify(o)}: id ${t} after ${prev} as u rose`);
      assert.ok(p.has(t), `${JSON.stringify(o)}: drew ${t}, which the distribution does not keep`);
      prev = t;
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    for (const [id, q] of p) assert.ok(Math.abs((counts.get(id) ?? 0) - q * N) <= 1, `${JSON.stringify(o)}: id ${id} took ${counts.get(id) ?? 0} of ${N}, expected ${q * N}`);
  }
  // The op: one uniform per row, the same draw.
  const be = await getBackend('cpu');
  const rows = 6, us = [0, 0.2, 0.5, 0.7, 0.99, 0.9999999];
  const L = Float32Array.from({ length: rows * V }, (_, i) => logits[i % V] + (i % 13) / 7);
  const a = { temperature: 0.8, topK: 30, topP: 0.95 };
  const x = be.upload(L, [rows, V], 'f32'), u = be.upload(Float32Array.from(us), [rows], 'f32');
  assert.deepEqual(Array.from(await be.read(ops.sample(x, u, a))), us.map((q, r) => drawToken(L, r * V, V, a, q)));
  assert.throws(() => ops.sample(x, u, { temperature: 0, topK: 0, topP: 1 }), /temperature must be > 0/);
  assert.throws(() => ops.sample(x, u, { temperature: 1, topK: 0, topP: 0 }), /topP must be in \(0, 1\]/);
  assert.throws(() => ops.sample(x, be.upload(Float32Array.from(us.slice(1)), [rows - 1], 'f32'), { temperature: 1, topK: 0, topP: 1 }), /expected logits \(N, V\) and uniforms \(N\)/);
});

test('drawToken never returns a token of probability 0, even when rounding leaves u above the total', () => {
  const L = Float32Array.from([0.5, 2, -Infinity, -Infinity]);
  assert.equal(drawToken(L, 0, 4, { temperature: 1 }, 1), 1, 'the last token with probability > 0');
  assert.equal(drawToken(L, 0, 4, { temperature: 1, topK: 3 }, 1), 1);
});

test('accept_draft: accept d with probability min(1, p(d)/q(d)), else draw from the residual max(0, p - q); the op is that decision per row', async () => {
  const p = [0.5, 0.3, 0.2, 0], q = [0.1, 0.5, 0.2, 0.2];
  // p(d) >= q(d): accepted whatever ua is.
  for (const d of [0, 2]) assert.deepEqual(acceptOrResample(p, q, d, 0.999, 0.5), { token: d, accepted: true });
  // p(1)/q(1) = 0.6: accepted below ua 0.6; rejected above, the residual being all on token 0.
  assert.deepEqual(acceptOrResample(p, q, 1, 0.59, 0.5), { token: 1, accepted: true });
  assert.deepEqual(acceptOrResample(p, q, 1, 0.61, 0.99), { token: 0, accepted: false });
  // p(3) = 0: always rejected. Residual [0.4, 0, 0, 0] here; with q' it is [0.3, 0.1, 0, 0], walked in vocabulary order.
  const q2 = [0.2, 0.2, 0.2, 0.4];
  assert.deepEqual(acceptOrResample(p, q2, 3, 0, 0.74), { token: 0, accepted: false });
  assert.deepEqual(acceptOrResample(p, q2, 3, 0, 0.76), { token: 1, accepted: false });
  // p = q with q(d) = 0: rejected, and the residual is empty: the token comes from p itself.
  assert.deepEqual(acceptOrResample([0.5, 0.5, 0], [0.5, 0.5, 0], 2, 0, 0.6), { token: 1, accepted: false });
  // The op on logits: per row, acceptDraft of that row's target and draft logits, drafts and uniforms.
  const be = await getBackend('cpu');
  const rng = new Rng(8);
  const N = 8, V = 300;
  const P = Float32Array.from({ length: N * V }, () => rng.next() * 6);
  const Q = P.map((x) => x + rng.next() * 2);
  const a = { temperature: 0.9, topK: 50, topP: 0.95 };
  const d = Int32Array.from({ length: N }, (_, r) => drawToken(Q, r * V, V, a, rng.next()));
  const u = Float32Array.from({ length: 2 * N }, () => rng.next());
  const out = await be.read(ops.acceptDraft(be.upload(P, [N, V], 'f32'), be.upload(Q, [N, V], 'f32'), be.upload(d, [N], 'i32'), be.upload(u, [N, 2], 'f32'), a));
  const want = Array.from(d, (x, r) => acceptDraft(P, Q, r * V, V, a, x, u[2 * r], u[2 * r + 1]));
  assert.deepEqual(Array.from(out), want.flatMap((w) => [w.accepted ? 1 : 0, w.token]));
  assert.ok(want.some((w) => w.accepted) && want.some((w) => !w.accepted), 'both outcomes among the rows');
  // Bad input: a drafted id outside the vocabulary, shapes that do not line up, sampling attributes.
  const [pt, qt, ut] = [be.upload(P, [N, V], 'f32'), be.upload(Q, [N, V], 'f32'), be.upload(u, [N, 2], 'f32')];
  assert.throws(() => ops.acceptDraft(pt, qt, be.upload(Int32Array.from(d).fill(V, 0, 1), [N], 'i32'), ut, a), /drafted token 300 outside the vocabulary 0\.\.299/);
  assert.throws(() => ops.acceptDraft(pt, qt, be.upload(d, [N], 'i32'), be.upload(u.subarray(0, N), [N], 'f32'), a), /expected target and draft logits \(N, V\), drafted ids \(N\) and uniforms \(N, 2\)/);
  assert.throws(() => ops.acceptDraft(pt, qt.reshape([N * 2, V / 2]), be.upload(d, [N], 'i32'), ut, a), /expected target and draft logits/);
  assert.throws(() => ops.acceptDraft(pt, qt, be.upload(d, [N], 'i32'), ut, { ...a, topP: 1.5 }), /topP must be in \(0, 1\]/);
});

test('generate: stop tokens, streaming, seeds and context errors', async () => {
  const { model, tokenizer } = await loadModel(BUNDLED, { backend: await getBackend('cpu') });
  const prompt = tokenizer!.encode('Once upon a time');
  const dense = await generate(model, [prompt], { maxNewTokens: 10, sampling: { greedy: true }, stopTokens: [] });
  const stopAt = dense.tokens[0][3];
  const streamed: number[] = [];
  const r = await generate(model, [prompt], { maxNewTokens: 10, sampling: { greedy: true }, stopTokens: [stopAt], onToken: (_, t) => streamed.push(t) });
  assert.deepEqual(r.tokens[0], dense.tokens[0].slice(0, dense.tokens[0].indexOf(stopAt) + 1));
  assert.equal(r.finish[0], 'stop');
  assert.deepEqual(streamed, r.tokens[0]);
  const s1 = await generate(model, [prompt], { maxNewTokens: 8, sampling: { temperature: 0.9, topP: 0.95, seed: 5 }, stopTokens: [] });
  const s2 = await generate(model, [prompt], { maxNewTokens: 8, sampling: { temperature: 0.9, topP: 0.95, seed: 5 }, stopTokens: [] });
  assert.deepEqual(s1.tokens, s2.tokens);
  await assert.rejects(generate(model, [prompt], { maxNewTokens: 2000 }), (e: unknown) => e instanceof ContextLengthError && /context is 1024/.test((e as Error).message) && /hint:/.test((e as Error).message));
  await assert.rejects(generate(model, [new Array(1100).fill(5)], { maxNewTokens: 1 }), ContextLengthError);
  await assert.rejects(generate(model, [prompt], { maxNewTokens: 4, sampling: { temperature: 0 } }), UsageError);
});

test('spec validation reports every problem with its path', () => {
  const fx = fixture('tiny-llama');
  assert.ok(!('skip' in fx));
  const good = JSON.parse(readFileSync(join(BUNDLED, 'config.json'), 'utf8'));
  assert.equal(good.model_type, 'llama');
  const spec: ModelSpec = {
    format: 'brickwork.spec', version: 1, vocabSize: 10, dModel: 8, maxContext: 16,
    norm: { kind: 'rmsnorm', eps: 1e-5, bias: false }, learnedPositions: false, rope: { theta: 10000 },
    tiedEmbeddings: true, finalNorm: true,
    layers: [{ wiring: 'serial', norm: 'pre', sublayers: [{ kind: 'attn', heads: 2, kvHeads: 1, headDim: 4, qkvBias: false, outBias: false, rope: true }, { kind: 'ffn', hidden: 0, gated: true, activation: 'silu', bias: false }] }],
  };
  const bad = JSON.parse(JSON.stringify(spec));
  bad.layers[0].sublayers[0].kvHeads = 3;
  bad.layers[0].sublayers[1].activation = 'swoosh';
  bad.norm.eps = -1;
  const p = specProblems(bad);
  assert.ok(p.some((x) => x.startsWith('layers[0].sublayers[0].kvHeads: expected a divisor of heads (2), found 3')), p.join('\n'));
  assert.ok(p.some((x) => x.startsWith('layers[0].sublayers[1].hidden: expected an integer > 0, found 0')));
  assert.ok(p.some((x) => x.startsWith('layers[0].sublayers[1].activation')));
  assert.ok(p.some((x) => x.startsWith('norm.eps')));
  assert.throws(() => validateSpec(bad), (e: unknown) => e instanceof SpecError && (e as SpecError).problems.length === p.length);
});

test('native checkpoint: save → load gives bit-identical logits, writes atomically', async () => {
  const be = await getBackend('cpu');
  const { model, tokenizer, storedDtype } = await loadModel(BUNDLED, { backend: be });
  assert.equal(storedDtype, 'bf16');
  const golden = readGolden(join(BUNDLED, '..', '..', 'test', 'golden', 'tiny-llama'));
  const ids = Int32Array.from(golden.prompts[1].ids);
  const before = await (await model.forward(ids, 1, ids.length)).logits.toF32();
  const dir = mkdtempSync(join(tmpdir(), 'bw-native-'));
  try {
    for (const dtype of ['f32', 'bf16'] as const) {
      const out = join(dir, `m-${dtype}`);
      await saveNative(model, out, { dtype, tokenizerDir: BUNDLED });
      assert.deepEqual(readdirSync(out).sort(), ['brickwork.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
      const re = await loadModel(out, { backend: be });
      assert.equal(re.source.kind, 'native');
      assert.deepEqual(re.model.spec, model.spec);
      const after = await (await re.model.forward(ids, 1, ids.length)).logits.toF32();
      assert.deepEqual(after, before, `${dtype} round trip changed the logits`);
      assert.deepEqual(re.tokenizer!.encode('Once upon a time'), tokenizer!.encode('Once upon a time'));
    }
    // Saving over an existing checkpoint replaces it and leaves no temporary folders behind.
    await saveNative(model, join(dir, 'm-f32'), { dtype: 'f16' });
    assert.deepEqual(readdirSync(dir).sort(), ['m-bf16', 'm-f32']);
    assert.ok(!existsSync(join(dir, 'm-f32', 'tokenizer.json')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('NaN logits stop generation, speculative decoding and perplexity with NonFiniteError, not a made-up token', async () => {
  const backend = await getBackend('cpu');
  const { model } = await loadModel(BUNDLED, { backend });
  const C = model.spec.dModel;
  const nan = new Float32Array(C).fill(1);
  nan[3] = NaN; // one channel of the final norm: every logit becomes NaN
  model.weights.get('final_norm.weight')!.dispose();
  model.weights.set('final_norm.weight', backend.upload(nan, [C], 'f32'));
  const prompt = [1031, 824, 259, 555];
  const isNonFinite = (e: unknown) => {
    assert.ok(e instanceof NonFiniteError, `expected NonFiniteError, got ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    assert.match((e as Error).message, /NaN or infinite/);
    assert.match((e as Error).message, /hint: /);
    return true;
  };
  await assert.rejects(generate(model, [prompt], { maxNewTokens: 4 }), isNonFinite);
  await assert.rejects(generate(model, [prompt], { maxNewTokens: 4, sampling: { temperature: 1, seed: 1 } }), isNonFinite);
  const draft = await createPolicy(model, 'static:layers.4-7');
  await assert.rejects(speculativeGenerate(model, prompt, { maxNewTokens: 4, draft, draftLength: 2 }), isNonFinite);
  await assert.rejects(speculativeGenerate(model, prompt, { maxNewTokens: 4, draft, draftLength: 2, sampling: { temperature: 1, seed: 1 } }), isNonFinite);
  await assert.rejects(perplexity(model, [...prompt, ...prompt], { window: 4 }), isNonFinite);
});

test('saving in f16 refuses weights beyond its range, and writes nothing', async () => {
  const backend = await getBackend('cpu');
  const { model } = await loadModel(BUNDLED, { backend });
  const C = model.spec.dModel;
  const w = new Float32Array(C).fill(1);
  w[7] = 1e6;
  w[8] = -7e4;
  model.weights.get('final_norm.weight')!.dispose();
  model.weights.set('final_norm.weight', backend.upload(w, [C], 'f32'));
  const dir = join(mkdtempSync(join(tmpdir(), 'bw-f16-')), 'out');
  await assert.rejects(saveNative(model, dir, { dtype: 'f16' }), (e: unknown) => {
    assert.ok(e instanceof UsageError, String(e));
    assert.match((e as Error).message, /weight 'final_norm\.weight': 2 values \(up to 1000000\) are beyond the range of f16/);
    assert.match((e as Error).message, /hint: save in bf16/);
    return true;
  });
  assert.equal(existsSync(dir), false);
  await saveNative(model, dir, { dtype: 'bf16' }); // bf16 has f32's range
  assert.ok(existsSync(join(dir, 'model.safetensors')));
  rmSync(dir, { recursive: true, force: true });
});
