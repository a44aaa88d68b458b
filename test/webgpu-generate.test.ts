// Pipelined generation (GenerateOptions.pipeline): on WebGPU each decode pass is recorded from the ids
// the pass before left on the device (its argmax, or its draw by the `sample` op), before they reach the host. It must give exactly the
// tokens of waiting for each id, end rows on the same stop tokens, run at most one pass past the end,
// and fall back to waiting for passes whose policy plan captures points or may exit early. Greedy
// self-speculative decoding chains its draft passes the same way, greedy or sampled. Model.forward takes token ids as a
// device tensor for this; on the CPU too.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend, createPolicy, generate, loadModel, ops, speculativeGenerate, type GenerateOptions, type Model } from '../src/index.ts';
import { withGpu } from './gpu-helpers.ts';
import { BUNDLED } from './helpers.ts';

const PROMPTS = [[1, 450, 2217, 338], [1, 903], [1, 3118, 2501, 263, 931]];

/**
 * Run `generate` and note, per decode pass, whether its ids came from the device, and how many earlier
 * passes' outputs had reached the host when it started.
 */
async function traced(model: Model, prompts: number[][], opts: GenerateOptions) {
  const kinds: ('device' | 'host')[] = [];
  const behind: number[] = [];
  let passes = 0, reads = 0;
  const { forward } = model;
  const be = model.backend;
  const read = be.read;
  model.forward = function (ids, B, T, o) {
    if (passes > 0) { kinds.push(ids instanceof Int32Array ? 'host' : 'device'); behind.push(passes - reads); }
    passes++;
    return forward.call(this, ids, B, T, o);
  };
  be.read = async function (t) { const r = await read.call(this, t); reads++; return r; };
  try {
    const r = await generate(model, prompts, opts);
    return { ...r, kinds, behind };
  } finally {
    model.forward = forward;
    be.read = read;
  }
}

test('WebGPU: pipelined greedy decoding gives the tokens of waiting for each one, from device ids', (t) => withGpu(t, async (gpu) => {
  const { model } = await loadModel(BUNDLED, { backend: gpu });
  const base = { maxNewTokens: 10, stopTokens: [] };
  const serial = await traced(model, PROMPTS, { ...base, pipeline: false });
  const piped = await traced(model, PROMPTS, base);
  assert.deepEqual(piped.tokens, serial.tokens);
  assert.deepEqual(piped.finish, ['length', 'length', 'length']);
  assert.equal(piped.decodeSteps, 9);
  // Serial: every pass from host ids. Pipelined: the first decode pass waits for the prefill's token,
  // every later one reads the previous pass's ids on the device, and none runs past the last token.
  assert.deepEqual(serial.kinds, new Array(9).fill('host'));
  assert.deepEqual(piped.kinds, ['host', ...new Array(8).fill('device')]);
  // …and each of those starts while the pass before it is still out: recording overlaps the GPU.
  assert.deepEqual(serial.behind, new Array(9).fill(0));
  assert.deepEqual(piped.behind, [0, ...new Array(8).fill(1)]);
  // The CPU (which waits for every token) agrees.
  const { model: onCpu } = await loadModel(BUNDLED, { backend: new CpuBackend() });
  assert.deepEqual((await generate(onCpu, PROMPTS, base)).tokens, serial.tokens);

  // One or two new tokens: nothing is recorded ahead, and no pass runs past the end.
  for (const n of [1, 2]) {
    const a = await traced(model, PROMPTS, { maxNewTokens: n, stopTokens: [] });
    const b = await traced(model, PROMPTS, { maxNewTokens: n, stopTokens: [], pipeline: false });
    assert.deepEqual(a.tokens, b.tokens, `${n} new tokens`);
    assert.equal(a.kinds.length, n - 1, `${n} new tokens: ${n - 1} decode passes`);
  }
}));

test('WebGPU: pipelined decoding stops on the same stop tokens and runs at most one pass past them', (t) => withGpu(t, async (gpu) => {
  const { model } = await loadModel(BUNDLED, { backend: gpu });
  const prompt = [PROMPTS[0]];
  const free = await traced(model, prompt, { maxNewTokens: 10, stopTokens: [], pipeline: false });
  // Stop on the 4th new token (first occurrence of that id).
  const stop = free.tokens[0][3];
  const at = free.tokens[0].indexOf(stop);
  const serial = await traced(model, prompt, { maxNewTokens: 10, stopTokens: [stop], pipeline: false });
  const piped = await traced(model, prompt, { maxNewTokens: 10, stopTokens: [stop] });
  assert.deepEqual(serial.tokens[0], free.tokens[0].slice(0, at + 1));
  assert.deepEqual(piped.tokens, serial.tokens);
  assert.deepEqual(piped.finish, ['stop']);
  assert.equal(piped.decodeSteps, serial.decodeSteps, 'decode steps count the passes whose tokens were used');
  assert.equal(piped.kinds.length, serial.kinds.length + 1, 'one pass was recorded ahead of the stop token');
  // In a batch, a row that stopped rides along on its own device ids; the other rows' tokens do not change.
  const two = [PROMPTS[0], PROMPTS[1]];
  const a = await traced(model, two, { maxNewTokens: 8, stopTokens: [stop], pipeline: false });
  const b = await traced(model, two, { maxNewTokens: 8, stopTokens: [stop] });
  assert.deepEqual(b.tokens, a.tokens);
  assert.deepEqual(b.finish, a.finish);
  assert.equal(a.finish[0], 'stop');
  // Its buffers went back to the pool: a second run allocates nothing new.
  const bytes = gpu.stats.allocatedBytes;
  await traced(model, prompt, { maxNewTokens: 10, stopTokens: [stop] });
  assert.equal(gpu.stats.allocatedBytes, bytes);
}));

test('WebGPU: sampled decoding draws on the device (the sample op), pipelined, and gives the CPU\'s tokens for the same seed', (t) => withGpu(t, async (gpu) => {
  const { model } = await loadModel(BUNDLED, { backend: gpu });
  const { model: onCpu } = await loadModel(BUNDLED, { backend: new CpuBackend() });
  for (const [i, sampling] of [{ temperature: 1, seed: 3 }, { temperature: 0.8, topK: 40, seed: 11 }, { temperature: 1.2, topP: 0.9, seed: 5 }, { temperature: 0.7, topK: 50, topP: 0.95, seed: 42 }].entries()) {
    const what = JSON.stringify(sampling);
    const base = { maxNewTokens: 8, stopTokens: [], sampling };
    const cpu = await generate(onCpu, PROMPTS, base);
    const k0 = gpu.stats.perOp.sample ?? 0;
    const piped = await traced(model, PROMPTS, base);
    assert.equal((gpu.stats.perOp.sample ?? 0) - k0, 8, `${what}: one device draw per pass`);
    assert.deepEqual(piped.tokens, cpu.tokens, `${what}: WebGPU and CPU tokens`);
    assert.deepEqual(piped.kinds, ['host', ...new Array(6).fill('device')], `${what}: decode passes read the draws on the device`);
    if (i === 0) assert.deepEqual((await traced(model, PROMPTS, { ...base, pipeline: false })).tokens, cpu.tokens, `${what}: waiting for each token`);
  }
  // Rows have their own random streams: a row's tokens do not change when another row stops early,
  // on the CPU as on WebGPU (where the stopped row still takes a number for the pass recorded ahead).
  const sampling = { temperature: 1, topK: 20, seed: 9 };
  const free = await generate(onCpu, PROMPTS, { maxNewTokens: 8, stopTokens: [], sampling });
  const stop = free.tokens[1][2];
  assert.ok(!free.tokens[0].includes(stop) && !free.tokens[2].includes(stop), 'the stop id appears only in row 1 (pick another seed if not)');
  for (const m of [onCpu, model]) {
    const r = await generate(m, PROMPTS, { maxNewTokens: 8, stopTokens: [stop], sampling });
    assert.deepEqual(r.finish, ['length', 'stop', 'length'], m.backend.name);
    assert.deepEqual(r.tokens, [free.tokens[0], free.tokens[1].slice(0, free.tokens[1].indexOf(stop) + 1), free.tokens[2]], m.backend.name);
  }
}));

test('WebGPU: policies — a static plan pipelines; ffn-skip waits through its warm-up, then pipelines; early exit waits', (t) => withGpu(t, async (gpu) => {
  const { model } = await loadModel(BUNDLED, { backend: gpu });
  const prompt = [PROMPTS[0]];
  for (const [spec, want] of [
    ['static:layers.3.ffn', ['host', ...new Array(6).fill('device')]],
    // Warm-up passes capture the FFNs' inputs and outputs: the prefill and decode passes 1–3 predict
    // the 4 warm-up tokens, so passes 2 and 3 wait; pass 4 runs with the chosen skips and goes ahead.
    ['ffn-skip:0.25,warmup=4', ['host', 'host', 'host', ...new Array(4).fill('device')]],
    ['early-exit:0.5', new Array(7).fill('host')],
  ] as [string, string[]][]) {
    const policy = await createPolicy(model, spec);
    const serial = await traced(model, prompt, { maxNewTokens: 8, stopTokens: [], policy, pipeline: false });
    const piped = await traced(model, prompt, { maxNewTokens: 8, stopTokens: [], policy });
    assert.deepEqual(piped.tokens, serial.tokens, spec);
    assert.deepEqual(piped.skipping, serial.skipping, spec);
    assert.deepEqual(piped.kinds, want, spec);
  }
}));

test('WebGPU: greedy speculative rounds chain on the device and give dense greedy tokens, stop tokens included', (t) => withGpu(t, async (gpu) => {
  const { model } = await loadModel(BUNDLED, { backend: gpu });
  const prompt = PROMPTS[0];
  const dense = (await generate(model, [prompt], { maxNewTokens: 10, stopTokens: [] })).tokens[0];
  const draft = await createPolicy(model, 'static:layers.4-7');
  let fromDevice = 0;
  const { forward } = model;
  model.forward = function (ids, B, T, o) {
    if (!(ids instanceof Int32Array)) fromDevice++;
    return forward.call(this, ids, B, T, o);
  };
  try {
    const r = await speculativeGenerate(model, prompt, { maxNewTokens: 10, draft, draftLength: 3, stopTokens: [] });
    assert.deepEqual(r.tokens, dense);
    assert.equal(r.reusedLayers, 0, 'WebGPU verifies whole passes by default');
    // Each round's first draft pass starts from host ids; the other draft passes read the draft before
    // them on the device, and each verification reads [last, d1, …, dk] joined there (concat): k passes
    // from device ids per round, as many as the round's drafts.
    assert.equal(fromDevice, r.draftPasses);
    assert.ok(fromDevice > 0);
    // Verification from the first layer the drafts skipped (the last draft's id goes to Model.prefix on the device).
    fromDevice = 0;
    const reused = await speculativeGenerate(model, prompt, { maxNewTokens: 10, draft, draftLength: 3, stopTokens: [], reuse: true });
    assert.deepEqual(reused.tokens, dense);
    assert.equal(reused.reusedLayers, 4);
    assert.equal(fromDevice, reused.draftPasses - reused.rounds, 'only the drafts after each round\'s first go through forward');
    // A stop token among the drafts: the drafts after it are dropped, and the output ends on it as dense decoding does.
    const stop = dense[5], at = dense.indexOf(stop);
    const s = await speculativeGenerate(model, prompt, { maxNewTokens: 10, draft, draftLength: 4, stopTokens: [stop] });
    assert.deepEqual(s.tokens, dense.slice(0, at + 1));
    assert.equal(s.finish, 'stop');
  } finally {
    model.forward = forward;
  }
}));

test('WebGPU: sampled speculative rounds run on the device (sample, accept_draft) with one wait per round, and give the CPU\'s tokens for the same seed', (t) => withGpu(t, async (gpu) => {
  const { model } = await loadModel(BUNDLED, { backend: gpu });
  const { model: onCpu } = await loadModel(BUNDLED, { backend: new CpuBackend() });
  const prompt = PROMPTS[0];
  let fromDevice = 0, reads = 0;
  const { forward } = model;
  const read = gpu.read;
  model.forward = function (ids, B, T, o) {
    if (!(ids instanceof Int32Array)) fromDevice++;
    return forward.call(this, ids, B, T, o);
  };
  gpu.read = async function (x) { reads++; return read.call(this, x); };
  try {
    let drafted = 0, accepted = 0;
    for (const [spec, k, sampling] of [['static:layers.4-7', 3, { temperature: 1, seed: 3 }], ['static:layers.2-5.ffn', 2, { temperature: 0.8, topK: 40, seed: 11 }],
      ['static:layers.5-7', 4, { temperature: 1.2, topP: 0.9, seed: 5 }], ['static:layers.3-7', 3, { temperature: 0.7, topK: 50, topP: 0.95, seed: 42 }]] as const) {
      const what = `${spec}, k=${k}, ${JSON.stringify(sampling)}`;
      const opts = { maxNewTokens: 12, draftLength: k, sampling, stopTokens: [] };
      const cpu = await speculativeGenerate(onCpu, prompt, { ...opts, draft: await createPolicy(onCpu, spec) });
      const d0 = gpu.stats.perOp.accept_draft ?? 0;
      fromDevice = 0; reads = 0;
      const r = await speculativeGenerate(model, prompt, { ...opts, draft: await createPolicy(model, spec) });
      assert.deepEqual(r.tokens, cpu.tokens, `${what}: WebGPU and CPU tokens`);
      assert.deepEqual([r.rounds, r.drafted, r.accepted], [cpu.rounds, cpu.drafted, cpu.accepted], `${what}: the same decisions`);
      assert.equal((gpu.stats.perOp.accept_draft ?? 0) - d0, r.rounds, `${what}: one accept_draft per round`);
      // Each round's drafts, decisions and token after the drafts are read together (3 reads, one wait),
      // plus the prefill's token; every draft pass after a round's first, and each verification, take device ids.
      assert.equal(reads, 3 * r.rounds + 1, `${what}: reads`);
      assert.equal(fromDevice, r.draftPasses, `${what}: passes from device ids`);
      drafted += r.drafted;
      accepted += r.accepted;
    }
    assert.ok(accepted > 0 && accepted < drafted, `${accepted}/${drafted} accepted: both outcomes exercised`);
    // Adaptive drafts (early exit reads its confidence inside the pass; ffn-skip observes a warm-up): the same tokens.
    for (const spec of ['early-exit:0.5', 'ffn-skip:0.5,warmup=4']) {
      const opts = { maxNewTokens: 10, draftLength: 3, sampling: { temperature: 0.9, topP: 0.9, seed: 4 }, stopTokens: [] };
      const cpu = await speculativeGenerate(onCpu, prompt, { ...opts, draft: await createPolicy(onCpu, spec) });
      const r = await speculativeGenerate(model, prompt, { ...opts, draft: await createPolicy(model, spec) });
      assert.deepEqual([r.tokens, r.accepted], [cpu.tokens, cpu.accepted], spec);
    }
    // Verification from the first layer the drafts skipped, as the CPU does by default: the same tokens.
    for (const spec of ['static:layers.4-7', 'early-exit:0.5']) {
      const opts = { maxNewTokens: 10, draftLength: 3, sampling: { temperature: 1, topK: 30, seed: 6 }, stopTokens: [] };
      const cpu = await speculativeGenerate(onCpu, prompt, { ...opts, draft: await createPolicy(onCpu, spec) });
      const r = await speculativeGenerate(model, prompt, { ...opts, draft: await createPolicy(model, spec), reuse: true });
      assert.ok(cpu.reusedLayers > 0 && r.reusedLayers === cpu.reusedLayers, `${spec}: ${r.reusedLayers} and ${cpu.reusedLayers} layers reused`);
      assert.deepEqual([r.tokens, r.accepted], [cpu.tokens, cpu.accepted], `${spec}, reuse`);
    }
    // A stop token: both backends end on it.
    const sampling = { temperature: 1, topK: 20, seed: 9 };
    const free = await speculativeGenerate(onCpu, prompt, { maxNewTokens: 12, draft: await createPolicy(onCpu, 'static:layers.4-7'), draftLength: 3, sampling, stopTokens: [] });
    const stop = free.tokens[6];
    for (const m of [onCpu, model]) {
      const s = await speculativeGenerate(m, prompt, { maxNewTokens: 12, draft: await createPolicy(m, 'static:layers.4-7'), draftLength: 3, sampling, stopTokens: [stop] });
      assert.deepEqual(s.tokens, free.tokens.slice(0, free.tokens.indexOf(stop) + 1), m.backend.name);
      assert.equal(s.finish, 'stop', m.backend.name);
    }
  } finally {
    model.forward = forward;
    gpu.read = read;
  }
}));

test('forward takes token ids as an i32 tensor on the model\'s backend, and refuses others', async () => {
  const be = new CpuBackend();
  const { model } = await loadModel(BUNDLED, { backend: be });
  const ids = Int32Array.from(PROMPTS[2]);
  const a = await model.forward(ids, 1, ids.length);
  const t = be.upload(ids, [ids.length], 'i32');
  const b = await model.forward(t, 1, ids.length);
  assert.deepEqual(await b.logits.toF32(), await a.logits.toF32());
  assert.equal(t.isDisposed, false, 'the caller keeps its ids tensor');
  const f = ops.scale(be.upload(Float32Array.from(ids), [ids.length], 'f32'), 1);
  await assert.rejects(model.forward(f, 1, ids.length), /token ids must be an i32 tensor on backend 'cpu', got f32 on 'cpu'/);
  await assert.rejects(model.forward(t, 1, 2), /5 ids for B=1, T=2/);
  await assert.rejects(model.forward(t, 1, ids.length, { cache: undefined, pos0: [model.spec.maxContext] }), /exceed maxContext/);
  for (const x of [a.logits, b.logits, t, f]) x.dispose();
});
