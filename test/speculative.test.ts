// Self-speculative decoding: greedy output equals the golden dense greedy continuation on all three
// tiny fixtures for several prompts, drafts and draft lengths; with sampling, the acceptance rule and
// whole generations follow the full model's distribution (chi-square tests with fixed seeds).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { acceptOrResample, createPolicy, exactLayers, getBackend, loadModel, Rng, samplingDistribution, speculativeGenerate, type Backend, type Model, type Tensor } from '../src/index.ts';
import { BUNDLED, fixture, readGolden } from './helpers.ts';

/** Upper critical value of chi-square with df degrees of freedom at the z-score (Wilson–Hilferty). */
function chi2Critical(df: number, z = 3.29 /* p ≈ 0.0005 */): number {
  const a = 2 / (9 * df);
  return df * (1 - a + z * Math.sqrt(a)) ** 3;
}

/** Chi-square statistic of observed counts against expected probabilities; bins expecting < 5 are pooled. */
function chiSquare(counts: Map<string, number>, probs: Map<string, number>, n: number): { stat: number; df: number } {
  let stat = 0, bins = 0, pooledE = 0, pooledO = 0;
  for (const [k, p] of probs) {
    const e = p * n, o = counts.get(k) ?? 0;
    if (e < 5) { pooledE += e; pooledO += o; continue; }
    stat += (o - e) ** 2 / e;
    bins++;
  }
  for (const k of counts.keys()) if (!probs.has(k)) throw new Error(`outcome ${k} has probability 0 under the full model`);
  if (pooledE > 0) { stat += (pooledO - pooledE) ** 2 / pooledE; bins++; }
  return { stat, df: bins - 1 };
}

for (const name of ['tiny-llama', 'tiny-gpt2', 'tiny-mixtral']) {
  test(`speculative greedy equals dense greedy: ${name}`, async (t) => {
    const fx = fixture(name);
    if ('skip' in fx) return t.skip(fx.skip);
    const { model } = await loadModel(fx.model, { backend: await getBackend('cpu') });
    const golden = readGolden(fx.golden);
    const L = model.spec.layers.length;
    for (const spec of [`static:layers.${L / 2}-${L - 1}`, `static:layers.1-${L - 2}.${name === 'tiny-mixtral' ? 'moe' : 'ffn'}`, 'early-exit:0.3']) {
      const draft = await createPolicy(model, spec);
      let drafted = 0, accepted = 0;
      for (const [k, prompts] of [[1, [0, 1]], [3, [2, 3, 4]], [6, [0, 4]]] as [number, number[]][]) {
        for (const i of prompts) {
          const p = golden.prompts[i];
          const r = await speculativeGenerate(model, p.ids, { maxNewTokens: 40, draft, draftLength: k, stopTokens: [] });
          assert.deepEqual(r.tokens, p.greedy_next_40, `${spec}, k=${k}, prompt ${i}`);
          drafted += r.drafted;
          accepted += r.accepted;
        }
      }
      // Both outcomes occur, so acceptance and rollback are both exercised.
      assert.ok(accepted > 0 && accepted < drafted, `${spec}: ${accepted}/${drafted} accepted`);
    }
  });
}

test('the acceptance rule turns draft samples into exact samples of the target distribution', () => {
  const p = Float64Array.from([0.05, 0.3, 0.1, 0.25, 0.0, 0.3]);
  const q = Float64Array.from([0.4, 0.1, 0.1, 0.05, 0.3, 0.05]);
  const rng = new Rng(7);
  const N = 200_000;
  const counts = new Map<string, number>();
  let accepted = 0;
  for (let i = 0; i < N; i++) {
    let u = rng.next(), d = 0;
    while (d < q.length - 1 && u >= q[d]) { u -= q[d]; d++; }
    const r = acceptOrResample(p, q, d, rng.next(), rng.next());
    if (r.accepted) accepted++;
    counts.set(String(r.token), (counts.get(String(r.token)) ?? 0) + 1);
  }
  assert.equal(counts.get('4') ?? 0, 0, 'a token with p = 0 was produced');
  const probs = new Map([...p].map((x, i) => [String(i), x] as [string, number]).filter(([, x]) => x > 0));
  const { stat, df } = chiSquare(counts, probs, N);
  assert.ok(stat < chi2Critical(df), `chi-square ${stat.toFixed(2)} with ${df} df`);
  // Expected acceptance is Σ min(p, q) = 0.05 + 0.1 + 0.1 + 0.05 + 0 + 0.05 = 0.35.
  assert.ok(Math.abs(accepted / N - 0.35) < 0.01, `acceptance ${accepted / N}`);
});

test('speculative sampling draws whole continuations from the full model\'s distribution (tiny-llama)', async () => {
  const fx = fixture('tiny-llama');
  assert.ok(!('skip' in fx));
  const { model } = await loadModel(fx.model, { backend: await getBackend('cpu') });
  const prompt = readGolden(fx.golden).prompts[0].ids;
  const sampling = { temperature: 1.3, topK: 3 };
  // Exact joint distribution of the first three new tokens under the full model (3 × 3 × 3 outcomes).
  const dist = async (m: Model, ids: number[]) => {
    const { logits } = await m.forward(Int32Array.from(ids), 1, ids.length, { logitRows: [ids.length - 1] });
    return samplingDistribution(await logits.toF32(), 0, m.spec.vocabSize, sampling);
  };
  const probs = new Map<string, number>();
  const d1 = await dist(model, prompt);
  for (let a = 0; a < d1.ids.length; a++) {
    const d2 = await dist(model, [...prompt, d1.ids[a]]);
    for (let b = 0; b < d2.ids.length; b++) {
      const d3 = await dist(model, [...prompt, d1.ids[a], d2.ids[b]]);
      for (let c = 0; c < d3.ids.length; c++) probs.set(`${d1.ids[a]},${d2.ids[b]},${d3.ids[c]}`, d1.probs[a] * d2.probs[b] * d3.probs[c]);
    }
  }
  const draft = await createPolicy(model, 'static:layers.3-7');
  const N = 1200;
  const counts = new Map<string, number>();
  let drafted = 0, accepted = 0;
  for (let seed = 1; seed <= N; seed++) {
    const r = await speculativeGenerate(model, prompt, { maxNewTokens: 3, draft, draftLength: 2, sampling: { ...sampling, seed }, stopTokens: [] });
    const key = r.tokens.join(',');
    counts.set(key, (counts.get(key) ?? 0) + 1);
    drafted += r.drafted;
    accepted += r.accepted;
  }
  assert.ok(accepted > 0.1 * drafted && accepted < 0.95 * drafted, `acceptance ${accepted}/${drafted}: both branches must be exercised`);
  const { stat, df } = chiSquare(counts, probs, N);
  assert.ok(df >= 5, `${df} degrees of freedom`);
  assert.ok(stat < chi2Critical(df), `chi-square ${stat.toFixed(2)} with ${df} df (critical ${chi2Critical(df).toFixed(2)})`);
});

test('speculative decoding checks its arguments', async () => {
  const fx = fixture('tiny-llama');
  assert.ok(!('skip' in fx));
  const { model } = await loadModel(fx.model, { backend: await getBackend('cpu') });
  const draft = await createPolicy(model, 'static:layers.4-7');
  await assert.rejects(speculativeGenerate(model, [1, 2], { maxNewTokens: 5, draft, draftLength: 0 }), /draft length must be an integer >= 1, found 0/);
  await assert.rejects(speculativeGenerate(model, [], { maxNewTokens: 5, draft, draftLength: 2 }), /the prompt is empty/);
  await assert.rejects(speculativeGenerate(model, [1, 2], { maxNewTokens: 2000, draft, draftLength: 2 }), /context/i);
});

/** Every tensor the backend makes while `f` runs that is still alive afterwards. */
async function leaked(be: Backend, f: () => Promise<void>): Promise<number> {
  const made = new Set<Tensor>();
  const { run, upload, zeros } = be;
  be.run = ((...a: Parameters<Backend['run']>) => { const t = run.apply(be, a); made.add(t); return t; }) as Backend['run'];
  be.upload = (...a) => { const t = upload.apply(be, a); made.add(t); return t; };
  be.zeros = (...a) => { const t = zeros.apply(be, a); made.add(t); return t; };
  try { await f(); } finally { Object.assign(be, { run, upload, zeros }); }
  return [...made].filter((t) => !t.isDisposed).length;
}

test('exactLayers: the layers below the first skipped sublayer, the exit, or an MoE layer routed to another top-k', async (t) => {
  const fx = fixture('tiny-mixtral');
  if ('skip' in fx) return t.skip(fx.skip);
  const { model } = await loadModel(fx.model, { backend: await getBackend('cpu') });
  const spec = model.spec, L = spec.layers.length;
  assert.equal(exactLayers(spec, { skipped: [], exitLayer: L }), L);
  assert.equal(exactLayers(spec, { skipped: ['layers.3.moe', 'layers.1.attn'], exitLayer: L }), 1);
  assert.equal(exactLayers(spec, { skipped: ['layers.3.attn', 'layers.3.moe'], exitLayer: 3 }), 3);
  const topK = spec.layers[0].sublayers.find((x) => x.kind === 'moe')!;
  assert.ok(topK.kind === 'moe');
  assert.equal(exactLayers(spec, { skipped: [], exitLayer: L }, topK.topK), L, 'the spec\'s own top-k changes nothing');
  assert.equal(exactLayers(spec, { skipped: [], exitLayer: L }, 1), 0);
});

test('verification starts where the drafts stop being exact: the same tokens, fewer layers run, nothing left allocated', async () => {
  const be = await getBackend('cpu');
  const { model } = await loadModel(BUNDLED, { backend: be });
  const prompt = [1031, 824, 259, 555, 14, 599];
  const dense = (await speculativeGenerate(model, prompt, { maxNewTokens: 24, draft: await createPolicy(model, 'dense'), draftLength: 2, stopTokens: [], reuse: false })).tokens;
  const calls: string[] = [];
  const { forward, prefix, forwardFrom } = model;
  model.forward = function (ids, B, T, o) { calls.push(`forward ${T}`); return forward.call(this, ids, B, T, o); };
  model.prefix = function (ids, B, T, layers, o) { calls.push(`prefix ${T} ${layers}`); return prefix.call(this, ids, B, T, layers, o); };
  model.forwardFrom = function (layer, x, B, T, o) { calls.push(`from ${layer} ${T}`); return forwardFrom.call(this, layer, x, B, T, o); };
  try {
    for (const [spec, k, s] of [['static:layers.4-7', 3, 4], ['static:layers.2-3.ffn', 2, 2], ['static:layers.6.attn', 4, 6], ['early-exit:0.5,min-layer=3', 3, 3], ['ffn-skip:0.5,warmup=4', 3, 1], ['dense', 2, 8]] as const) {
      const draft = await createPolicy(model, spec);
      for (const reuse of [true, false]) {
        calls.length = 0;
        let r!: Awaited<ReturnType<typeof speculativeGenerate>>;
        const left = await leaked(be, async () => { r = await speculativeGenerate(model, prompt, { maxNewTokens: 24, draft, draftLength: k, stopTokens: [], reuse }); });
        assert.deepEqual(r.tokens, dense, `${spec}, reuse ${reuse}`);
        assert.equal(left, 0, `${spec}, reuse ${reuse}: tensors left allocated`);
        assert.equal(calls[0], `forward ${prompt.length}`, 'the prefill');
        if (!reuse) {
          assert.equal(r.reusedLayers, 0);
          assert.equal(calls.filter((c) => c.startsWith('from') || c.startsWith('prefix')).length, 0);
          assert.equal(calls.length - 1 - r.draftPasses, r.rounds, `${spec}: one whole verification per round`);
          continue;
        }
        // Every round: k drafts (forward 1), the last draft through the layers below s alone, the rows from layer s.
        assert.ok(r.reusedLayers >= s, `${spec}: ${r.reusedLayers} layers reused, at least ${s}`);
        if (!spec.startsWith('early-exit') && !spec.startsWith('ffn-skip')) {
          assert.equal(r.reusedLayers, s, spec);
          const rest = calls.slice(1).filter((c) => c !== 'forward 1');
          assert.equal(rest.length, 2 * r.rounds, `${spec}: ${rest.join(', ')}`);
          for (let i = 0; i < rest.length; i += 2) {
            assert.equal(rest[i], `prefix 1 ${s}`, spec);
            assert.match(rest[i + 1], new RegExp(`^from ${s} [2-${k + 1}]$`), spec);
          }
        }
      }
    }
    // Sampled rounds split their verification the same way: the same draws for the same seed.
    const draft = await createPolicy(model, 'static:layers.5-7');
    const sampling = { temperature: 0.9, topK: 40, seed: 8 };
    const runs: number[][] = [];
    for (const reuse of [true, false]) {
      let r!: Awaited<ReturnType<typeof speculativeGenerate>>;
      const left = await leaked(be, async () => { r = await speculativeGenerate(model, prompt, { maxNewTokens: 24, draft, draftLength: 3, stopTokens: [], sampling, reuse }); });
      assert.equal(left, 0, `sampled, reuse ${reuse}: tensors left allocated`);
      assert.equal(r.reusedLayers, reuse ? 5 : 0);
      runs.push(r.tokens);
    }
    assert.deepEqual(runs[0], runs[1]);
  } finally {
    Object.assign(model, { forward, prefix, forwardFrom });
  }
});
