// Fused decoding (ForwardOptions.fuse, BrickDef.fused): a fused pass gives exactly the unfused pass's
// values on the CPU (the CPU's fused_linear is the composition of the same kernels), on the fixtures
// and across the zoo; it removes the dispatches it claims; captured or hooked points, QK-norm, MoE and
// the narrow FFN variants fall back to the unfused bricks; a Tape never sees a fused op; where a backend
// cannot bind enough tensors to one op, q, k and v take a dispatch each. On WebGPU the fused kernels
// agree with the unfused ones and a Llama layer decodes in 5 dispatches instead of 18.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend, Model, Tape, generate, loadModel, ops, randomModel, zooSpec, type Backend, type ForwardOptions, type ZooOptions } from '../src/index.ts';
import { withGpu } from './gpu-helpers.ts';
import { BUNDLED, fixture } from './helpers.ts';

const cpu = new CpuBackend();
const TINY = BUNDLED;
const PROMPT = [5, 17, 3, 99, 42, 8, 61];

/** Dispatches of fused ops so far. */
const fusedCount = (be: Backend) => (be.stats.perOp.fused_linear ?? 0) + (be.stats.perOp.fused_kv_write ?? 0) + (be.stats.perOp.fused_qkv ?? 0);

/** Logits of a prompt pass and of 3 decode steps after it, and the dispatches of the last step. */
async function decode(model: Model, fuse: boolean, opts: ForwardOptions = {}): Promise<{ logits: Float32Array[]; perToken: number; fusedOps: number }> {
  const cache = model.newCache(1, 32);
  const out: Float32Array[] = [];
  const V = model.spec.vocabSize;
  const first = await model.forward(Int32Array.from(PROMPT.map((id) => id % V)), 1, PROMPT.length, { ...opts, cache, fuse });
  out.push(await first.logits.toF32());
  first.logits.dispose();
  let perToken = 0, fusedOps = 0;
  for (let i = 0; i < 3; i++) {
    const before = model.backend.stats.dispatches, fb = fusedCount(model.backend);
    const r = await model.forward(Int32Array.from([(7 * i + 3) % V]), 1, 1, { ...opts, cache, fuse, pos0: [PROMPT.length + i] });
    perToken = model.backend.stats.dispatches - before;
    fusedOps = fusedCount(model.backend) - fb;
    out.push(await r.logits.toF32());
    r.logits.dispose();
  }
  cache.dispose();
  return { logits: out, perToken, fusedOps };
}

function assertSame(a: Float32Array[], b: Float32Array[], what: string): void {
  assert.equal(a.length, b.length);
  a.forEach((x, i) => assert.deepEqual(x, b[i], `${what}: pass ${i} differs`));
}

for (const name of ['tiny-llama', 'tiny-gpt2', 'tiny-mixtral']) {
  test(`fused decoding equals unfused bit for bit on the CPU: ${name}`, async (t) => {
    const fx = fixture(name);
    if ('skip' in fx) return void t.skip(fx.skip);
    const { model } = await loadModel(fx.model, { backend: cpu });
    const plain = await decode(model, false);
    const fused = await decode(model, true);
    assertSame(fused.logits, plain.logits, name);
    assert.equal(plain.fusedOps, 0);
    const L = model.spec.layers.length;
    // Per layer: q, k and v (k and v into the cache) as one, o (+ gate/up and down for a dense FFN); plus the final norm with the head.
    const dense = model.spec.layers[0].sublayers.some((s) => s.kind === 'ffn');
    assert.equal(fused.fusedOps, L * (dense ? 4 : 2) + 1, `${name}: fused dispatches per token`);
    assert.equal(model.backend.stats.perOp.fused_kv_write ?? 0, 0, `${name}: no separate cache writes`);
    assert.ok(fused.perToken < plain.perToken, `${name}: ${fused.perToken} dispatches fused vs ${plain.perToken}`);
  });
}

test('fused decoding dispatch count on a Llama layout: 5 per layer + 2', async () => {
  const { model } = await loadModel(TINY, { backend: cpu });
  const plain = await decode(model, false);
  const fused = await decode(model, true);
  const L = model.spec.layers.length;
  // embed gather; per layer q with k and v into the cache, attention, o + residual, gate·up, down + residual; norm + head.
  assert.equal(fused.perToken, 1 + 5 * L + 1);
  assert.equal(plain.perToken, 1 + 18 * L + 2);
});

const DIMS = { vocab: 61, width: 32, layers: 3, heads: 4, kvHeads: 2, ffn: 40, context: 64 } as const;
// [label, options, what fuses, fused_linear dispatches per decode token (3 layers; +1 is the final norm with the head)]
const ZOO: [string, Partial<ZooOptions>, string, number][] = [
  ['pre, GQA', {}, 'every sublayer', 3 * 4 + 1],
  ['parallel wiring', { parallel: true }, 'the residual is the running sum', 3 * 4 + 1],
  ['LayerNorm Scaling', { scheme: 'lns' }, 'the norm scale folds into the input', 3 * 4 + 1],
  ['layernorm with bias', { norm: 'layernorm' }, 'mean and bias in the prologue', 3 * 4 + 1],
  ['peri', { scheme: 'peri' }, 'output norms: nothing but the head', 1],
  ['mix', { scheme: 'mix' }, 'the post-norm first layer unfused', 2 * 4 + 1],
  ['hybrid', { scheme: 'hybrid' }, 'QKV-norm attention and post-norm FFN unfused', 1],
  ['QK-norm', { qkNorm: 'qk' }, 'attention unfused, FFN fused', 3 * 2 + 1],
  ['low-rank FFN', { ffnVariant: { rank: 8 } }, 'attention only', 3 * 2 + 1],
  ['MoE', { ffnVariant: { experts: 4, topK: 2 } }, 'attention only', 3 * 2 + 1],
  ['PAR pattern', { pattern: ['attn+ffn', 'ffn'] }, 'an FFN-only layer', 2 * 2 + 3 * 2 + 1],
];
for (const [label, o, why, count] of ZOO) {
  test(`fused decoding equals unfused on the zoo: ${label} (${why})`, async () => {
    const model = randomModel(zooSpec({ ...DIMS, scheme: 'pre', ...o }), cpu, { seed: 3, std: 0.2 });
    const fused = await decode(model, true);
    assertSame(fused.logits, (await decode(model, false)).logits, label);
    assert.equal(fused.fusedOps, count, `${label}: fused_linear dispatches per token`);
  });
}

test('nested (MatFormer) FFNs run fused at full width and unfused when narrowed', async () => {
  const model = randomModel(zooSpec({ ...DIMS, scheme: 'pre', ffnVariant: { nested: [10, 20, 40] } }), cpu, { seed: 4, std: 0.2 });
  const full = await decode(model, true);
  assertSame(full.logits, (await decode(model, false)).logits, 'full width');
  assert.equal(full.fusedOps, 3 * 4 + 1);
  const narrow = await decode(model, true, { ffnWidth: 20 });
  assertSame(narrow.logits, (await decode(model, false, { ffnWidth: 20 })).logits, 'width 20');
  assert.equal(narrow.fusedOps, 3 * 2 + 1, 'only attention and the head fuse');
});

test('a captured or hooked point keeps its sublayer unfused, and the hook still applies', async () => {
  const { model } = await loadModel(TINY, { backend: cpu });
  const opts = (): ForwardOptions => ({
    capture: ['layers.3.ffn.act'],
    hooks: [{ point: 'layers.2.attn.out', fn: (v) => ops.scale(v, 0.5) }],
  });
  const fused = await decode(model, true, opts());
  const plain = await decode(model, false, opts());
  assertSame(fused.logits, plain.logits, 'with capture and hook');
  // Layer 3's FFN (2 linears) and layer 2's attention (qkv and o) run unfused.
  assert.equal(fused.fusedOps, 8 * 4 + 1 - 2 - 2);
  const unhooked = await decode(model, true);
  assert.notDeepEqual(unhooked.logits[1], fused.logits[1], 'the hook changed the result');
});

/** The CPU backend with a WebGPU-like cap on the tensors one op may bind. */
class CappedCpu extends CpuBackend {
  constructor(readonly maxOpTensors: number) { super(); }
}

test('where a backend cannot bind q, k and v in one op, they take a dispatch each, with the same values', async (t) => {
  const fx = fixture('tiny-gpt2');
  if ('skip' in fx) return void t.skip(fx.skip);
  // tiny-gpt2 needs 12 tensors for one fused_qkv (caches, x, 3 weights, LayerNorm weight and bias, 3 biases, q).
  for (const [cap, qkv] of [[12, 1], [11, 0]] as const) {
    const be = new CappedCpu(cap);
    const { model } = await loadModel(fx.model, { backend: be });
    const L = model.spec.layers.length;
    const fused = await decode(model, true);
    assertSame(fused.logits, (await decode(model, false)).logits, `cap ${cap}`);
    assert.equal(fused.fusedOps, L * (qkv ? 4 : 6) + 1, `cap ${cap}: fused dispatches per token`);
  }
});

test('fused_qkv rejects one tensor given as both caches, and caches that differ in shape', () => {
  const f = (shape: number[]) => cpu.zeros(shape, 'f32');
  const parts = { x: f([1, 1, 4]), wq: f([4, 4]), wk: f([2, 4]), wv: f([2, 4]) };
  const c = f([1, 1, 3, 2]);
  assert.throws(() => ops.fusedQkv({ k: c, v: c }, parts, [0]), /E_SHAPE|share storage/);
  assert.throws(() => ops.fusedQkv({ k: c, v: f([1, 1, 5, 2]) }, parts, [0]), /key cache \[1, 1, 3, 2\] and value cache \[1, 1, 5, 2\] differ/);
  assert.deepEqual(ops.fusedQkv({ k: c, v: f([1, 1, 3, 2]) }, parts, [2]).shape, [1, 1, 4]);
});

test('under a Tape nothing is fused, so gradients still flow', async () => {
  const model = randomModel(zooSpec({ ...DIMS, scheme: 'pre' }), cpu, { seed: 5 });
  const before = fusedCount(cpu);
  const w = model.weights.get('layers.0.attn.q.weight')!;
  const tape = new Tape([w]);
  const loss = await tape.run(async () => {
    const { logits } = await model.forward(Int32Array.from([1, 2, 3]), 1, 3, { fuse: true });
    return ops.sum(ops.sum(logits.reshape([3, DIMS.vocab])).reshape([1, 3]));
  });
  const grads = tape.backward(loss);
  assert.ok(grads.get(w), 'a gradient reached the q projection');
  assert.equal(fusedCount(cpu) - before, 0);
});

test('fusion is on by default only where the backend prefers it and the pass is small', async () => {
  const model = randomModel(zooSpec({ ...DIMS, scheme: 'pre' }), cpu, { seed: 6 });
  const count = async (be: Backend, T: number, fuse?: boolean) => {
    const b = fusedCount(be);
    (await model.forward(Int32Array.from({ length: T }, (_, i) => i + 1), 1, T, { fuse })).logits.dispose();
    return fusedCount(be) - b;
  };
  assert.equal(await count(cpu, 1), 0, 'the CPU does not prefer fusion');
  assert.ok(await count(cpu, 12, true) > 0, 'fuse: true forces it for any number of rows');
});

test('WebGPU: fused decoding agrees with unfused, with 5 dispatches per layer instead of 18', (t) => withGpu(t, async (gpu) => {
  const { model } = await loadModel(TINY, { backend: gpu });
  const plain = await decode(model, false);
  const fused = await decode(model, true);
  fused.logits.forEach((x, i) => {
    let worst = 0;
    for (let k = 0; k < x.length; k++) worst = Math.max(worst, Math.abs(x[k] - plain.logits[i][k]));
    assert.ok(worst < 1e-4, `pass ${i}: max |diff| ${worst}`);
  });
  const L = model.spec.layers.length;
  assert.equal(fused.perToken, 2 + 5 * L);
  assert.equal(plain.perToken, 3 + 18 * L);
  // Default on WebGPU: a one-token pass fuses without being asked.
  const cache = model.newCache(1, 8);
  const b = fusedCount(gpu);
  (await model.forward(Int32Array.from([1]), 1, 1, { cache })).logits.dispose();
  assert.equal(fusedCount(gpu) - b, 4 * L + 1);
  cache.dispose();
  // Greedy generation picks each token on the device (topk 1) and matches the CPU's tokens.
  const prompt = [[1, 450, 2217, 338], [1, 903]];
  const k0 = gpu.stats.perOp.topk ?? 0;
  const g = await generate(model, prompt, { maxNewTokens: 6, stopTokens: [] });
  assert.equal((gpu.stats.perOp.topk ?? 0) - k0, 6, 'one device argmax per step');
  const { model: onCpu } = await loadModel(TINY, { backend: cpu });
  assert.deepEqual(g.tokens, (await generate(onCpu, prompt, { maxNewTokens: 6, stopTokens: [] })).tokens);
}));

test('WebGPU: submitting every few dispatches while recording gives the same values', (t) => withGpu(t, async (gpu) => {
  const { model } = await loadModel(TINY, { backend: gpu });
  const whole = await decode(model, true);
  const s0 = gpu.stats.submits;
  gpu.submitEvery = 5;
  try {
    const split = await decode(model, true);
    assert.ok(gpu.stats.submits - s0 >= 4 * Math.floor(split.perToken / 5), 'work was submitted during recording');
    assertSame(split.logits, whole.logits, 'submitEvery 5');
  } finally {
    gpu.submitEvery = 0;
  }
}));
