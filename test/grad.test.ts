// Gradient rules against central finite differences, one check per differentiable primitive (and
// per broadcasting/transpose variant), on the reference CPU backend; plus the tape's bookkeeping:
// ops without a gradient refuse clearly, and recorded activations are freed by backward.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend, GRAD_RULES, NoGradientError, OP_NAMES, Tape, ops, type Tensor } from '../src/index.ts';
import { rand } from './helpers.ts';

const be = new CpuBackend({ reference: true });

interface Input { data: Float32Array | Int32Array; shape: number[]; diff: boolean }
const r = rand(42);
const f = (shape: number[], lo = -1, hi = 1, diff = true): Input =>
  ({ data: Float32Array.from({ length: shape.reduce((p, x) => p * x, 1) }, () => lo + (hi - lo) * r()), shape, diff });
const ints = (data: number[], shape = [data.length]): Input => ({ data: Int32Array.from(data), shape, diff: false });
const konst = (i: Input): Input => ({ ...i, diff: false });

/** Σ out·R for a fixed random R, on the host in doubles. */
async function objective(fn: (xs: Tensor[]) => Tensor, inputs: Input[], R: Float64Array | undefined): Promise<{ value: number; R: Float64Array; out: Tensor; xs: Tensor[] }> {
  const xs = inputs.map((i) => be.upload(i.data, i.shape, i.data instanceof Int32Array ? 'i32' : 'f32'));
  const out = fn(xs);
  const o = await out.toF32();
  const RR = R ?? Float64Array.from(o, () => r() * 2 - 1);
  let v = 0;
  for (let i = 0; i < o.length; i++) v += o[i] * RR[i];
  return { value: v, R: RR, out, xs };
}

/** Checks the tape's gradient of every differentiable input against central differences. */
async function check(name: string, fn: (xs: Tensor[]) => Tensor, inputs: Input[], tol = 2e-3, h = 1e-2) {
  const first = await objective(fn, inputs, undefined);
  const xs = inputs.map((i) => be.upload(i.data, i.shape, i.data instanceof Int32Array ? 'i32' : 'f32'));
  const watched = xs.filter((_, j) => inputs[j].diff);
  const tape = new Tape(watched);
  const out = await tape.run(() => fn(xs));
  const grads = tape.backward(out, be.upload(Float32Array.from(first.R), out.shape, 'f32'));
  for (let j = 0; j < inputs.length; j++) {
    if (!inputs[j].diff) continue;
    const g = grads.get(xs[j]);
    assert.ok(g, `${name}: no gradient for input ${j}`);
    assert.deepEqual(g.shape, inputs[j].shape, `${name}: gradient shape of input ${j}`);
    const ga = await g.toF32();
    const data = inputs[j].data as Float32Array;
    let maxErr = 0, scale = 1e-3;
    for (let i = 0; i < data.length; i++) {
      const keep = data[i];
      data[i] = keep + h;
      const up = (await objective(fn, inputs, first.R)).value;
      data[i] = keep - h;
      const down = (await objective(fn, inputs, first.R)).value;
      data[i] = keep;
      const num = (up - down) / (2 * h);
      maxErr = Math.max(maxErr, Math.abs(num - ga[i]));
      scale = Math.max(scale, Math.abs(num));
    }
    assert.ok(maxErr / scale < tol, `${name}: input ${j} gradient differs from finite differences by ${maxErr} (scale ${scale})`);
  }
}

test('every op has a gradient rule or a stated reason', () => {
  for (const op of OP_NAMES) {
    const rule = GRAD_RULES[op];
    assert.ok(typeof rule === 'function' || (typeof rule.none === 'string' && rule.none.length > 10), op);
  }
});

test('matmul gradients (plain, transposed, batched, broadcast weights)', async () => {
  await check('matmul', ([a, b]) => ops.matmul(a, b), [f([3, 4]), f([4, 5])]);
  await check('matmul transB', ([a, b]) => ops.matmul(a, b, true), [f([3, 4]), f([5, 4])]);
  await check('matmul transA', ([a, b]) => ops.matmulT(a, b, { transA: true }), [f([4, 3]), f([4, 5])]);
  await check('matmul transA transB', ([a, b]) => ops.matmulT(a, b, { transA: true, transB: true }), [f([4, 3]), f([5, 4])]);
  await check('matmul batched x weight', ([a, b]) => ops.matmul(a, b, true), [f([2, 3, 4]), f([5, 4])]);
  await check('matmul batched x batched', ([a, b]) => ops.matmul(a, b), [f([2, 3, 4]), f([2, 4, 5])]);
  await check('matmul broadcast batch', ([a, b]) => ops.matmul(a, b, true), [f([2, 2, 3, 4]), f([2, 5, 4])]);
});

test('elementwise and broadcasting gradients', async () => {
  for (const [name, fn] of [['add', ops.add], ['sub', ops.sub], ['mul', ops.mul]] as const) {
    await check(name, ([a, b]) => fn(a, b), [f([2, 3, 4]), f([2, 3, 4])]);
    await check(`${name} broadcast row`, ([a, b]) => fn(a, b), [f([2, 3, 4]), f([4])]);
    await check(`${name} broadcast column`, ([a, b]) => fn(a, b), [f([2, 3, 4]), f([3, 1])]);
  }
  await check('div', ([a, b]) => ops.div(a, b), [f([2, 3, 4]), f([2, 3, 4], 0.5, 2)]);
  await check('div broadcast', ([a, b]) => ops.div(a, b), [f([2, 3, 4]), f([2, 3, 1], 0.5, 2)]);
  await check('mul self', ([a]) => ops.mul(a, a), [f([5])]);
  await check('scale', ([a]) => ops.scale(a, -2.5), [f([7])]);
  await check('silu', ([a]) => ops.silu(a), [f([9], -4, 4)]);
  await check('relu', ([a]) => ops.relu(a), [{ ...f([8], 0.1, 2), data: Float32Array.from([-1.5, -0.7, -0.2, 0.3, 0.9, 1.4, -2, 2]) }]);
  await check('gelu_erf', ([a]) => ops.geluErf(a), [f([9], -4, 4)]);
  await check('gelu_tanh', ([a]) => ops.geluTanh(a), [f([9], -4, 4)]);
});

test('reduction, softmax and norm gradients', async () => {
  await check('softmax', ([a]) => ops.softmax(a), [f([3, 5], -2, 2)]);
  await check('sum', ([a]) => ops.sum(a), [f([3, 5])]);
  await check('sum_to', ([a]) => ops.sumTo(a, [3, 1]), [f([2, 3, 4])]);
  await check('layernorm', ([x, w, b]) => ops.layernorm(x, w, b, 1e-5), [f([3, 6], -2, 2), f([6], 0.5, 1.5), f([6])]);
  await check('layernorm no bias', ([x, w]) => ops.layernorm(x, w, undefined, 1e-5), [f([2, 7], -2, 2), f([7], 0.5, 1.5)]);
  await check('rmsnorm', ([x, w]) => ops.rmsnorm(x, w, 1e-5), [f([3, 6], -2, 2), f([6], 0.5, 1.5)]);
  await check('cross_entropy', ([l, t]) => ops.crossEntropy(l, t), [f([4, 6], -2, 2), ints([5, 0, -100, 3])]);
});

test('position, indexing and layout gradients', async () => {
  await check('rope', ([x]) => ops.rope(x, [3, 0], [1, 0.1, 0.01]), [f([2, 3, 2, 8])]);
  await check('rope partial', ([x]) => ops.rope(x, [5], [0.5]), [f([1, 2, 3, 6])]);
  await check('gather_rows', ([t, i]) => ops.gatherRows(t, i), [f([5, 3]), ints([4, 1, 4, 0, 1, 1], [2, 3])]);
  await check('index_add_rows', ([d, s, i]) => ops.indexAddRows(d, s, i), [f([4, 3]), f([5, 3]), ints([2, 0, 2, 3, 2])]);
  await check('gather', ([x, i]) => ops.gather(x, i), [f([3, 5]), ints([4, 1, 0, 0, 2, 3], [3, 2])]);
  await check('permute', ([x]) => ops.permute(x, [2, 0, 1]), [f([2, 3, 4])]);
  await check('slice', ([x]) => ops.slice(x, 1, 1, 3), [f([2, 4, 3])]);
  await check('concat', ([a, b]) => ops.concat(a, b, 1), [f([2, 4, 3]), f([2, 2, 3])]);
  await check('pad', ([x]) => ops.pad(x, 0, 1, 2), [f([2, 3])]);
  await check('kv_write', ([c, x]) => ops.kvWrite(c, x, [1, 0]), [konst(f([2, 2, 4, 3])), f([2, 2, 2, 3])]);
});

test('attention gradients (causal, GQA, cached positions)', async () => {
  await check('attention MHA', ([q, k, v]) => ops.attention(q, k, v, [0], 0.5), [f([1, 4, 2, 3]), f([1, 2, 4, 3]), f([1, 2, 4, 3])]);
  await check('attention GQA with offsets', ([q, k, v]) => ops.attention(q, k, v, [2, 0], 0.4), [f([2, 3, 4, 2]), f([2, 2, 5, 2]), f([2, 2, 5, 2])]);
});

test('ops without a gradient refuse to be recorded, with the reason', async () => {
  const x = be.upload(Float32Array.from([1, 2, 3]), [3], 'f32');
  const tape = new Tape([x]);
  await assert.rejects(tape.run(() => ops.max(x)), (e: unknown) => e instanceof NoGradientError && /argmax/.test((e as Error).message));
  // Without a watched input nothing is recorded, so the same op is fine.
  const y = be.upload(Float32Array.from([1, 2, 3]), [3], 'f32');
  await new Tape([x]).run(() => ops.max(y));
});

test('backward frees recorded activations and leaves parameters alone', async () => {
  const w = be.upload(Float32Array.from({ length: 12 }, () => r()), [3, 4], 'f32');
  const x = be.upload(Float32Array.from({ length: 8 }, () => r()), [2, 4], 'f32');
  const tape = new Tape([w]);
  const inner: Tensor[] = [];
  const loss = await tape.run(() => {
    const h = ops.matmul(x, w, true);
    const a = ops.silu(h);
    h.dispose(); // a forward pass drops what it no longer needs …
    inner.push(h, a);
    const s = ops.sum(ops.sum(a).reshape([1, 2]));
    a.dispose();
    return s;
  });
  // … but the tape keeps it until backward has used it.
  assert.ok(inner.every((t) => !t.isDisposed), 'activations must live until backward');
  assert.equal(tape.length, 4);
  const grads = tape.backward(loss);
  assert.ok(inner.every((t) => t.isDisposed), 'backward must free the activations');
  assert.ok(!w.isDisposed && !x.isDisposed);
  assert.deepEqual(grads.get(w)!.shape, [3, 4]);
  assert.throws(() => tape.backward(loss), /already used/);
});

test('fast CPU backward kernels equal the reference (attention_grad, cross_entropy_grad, matmul transA)', async () => {
  const fast = new CpuBackend();
  const up = (b: CpuBackend, i: Input) => b.upload(i.data, i.shape, i.data instanceof Int32Array ? 'i32' : 'f32');
  const same = async (name: string, fn: (xs: Tensor[]) => Tensor, inputs: Input[]) => {
    const a = await fn(inputs.map((i) => up(be, i))).toF32(), b = await fn(inputs.map((i) => up(fast, i))).toF32();
    let err = 0, scale = 1e-6;
    for (let i = 0; i < a.length; i++) { err = Math.max(err, Math.abs(a[i] - b[i])); scale = Math.max(scale, Math.abs(a[i])); }
    assert.ok(err / scale < 1e-5, `${name}: fast differs from reference by ${err} (scale ${scale})`);
  };
  for (const [B, T, H, K, D, S, pos0] of [[1, 1, 1, 1, 1, 1, [0]], [2, 7, 4, 2, 5, 9, [2, 0]], [1, 33, 6, 1, 8, 40, [7]]] as const) {
    const ins = [f([B, T, H, D]), f([B, K, S, D]), f([B, K, S, D]), f([B, T, H, D])];
    for (const wrt of ['q', 'k', 'v'] as const)
      await same(`attention_grad ${wrt} ${B},${T},${H},${K},${D},${S}`, ([q, k, v, g]) => ops.attentionGrad(q, k, v, g, [...pos0], 0.3, wrt), ins);
  }
  await same('cross_entropy_grad', ([l, t, g]) => ops.crossEntropyGrad(l, t, g), [f([5, 33], -3, 3), ints([3, -100, 0, 32, 7]), f([5])]);
  await same('cross_entropy', ([l, t]) => ops.crossEntropy(l, t), [f([5, 33], -3, 3), ints([3, -100, 0, 32, 7])]);
  await same('matmul transA', ([a, b]) => ops.matmulT(a, b, { transA: true }), [f([33, 7]), f([33, 9])]);
  await same('matmul transA transB batched', ([a, b]) => ops.matmulT(a, b, { transA: true, transB: true }), [f([2, 33, 7]), f([2, 9, 33])]);
  await same('matmul transA broadcast b', ([a, b]) => ops.matmulT(a, b, { transA: true }), [f([3, 5, 7]), f([5, 4])]);
});

test('fast sum_to equals the reference', async () => {
  const fast = new CpuBackend();
  for (const [from, to] of [[[3, 5, 7], []], [[3, 5, 7], [7]], [[3, 5, 7], [5, 7]], [[3, 5, 7], [5, 1]], [[4, 1, 6], [1, 6]]] as number[][][]) {
    const x = f(from);
    const a = await ops.sumTo(be.upload(x.data, from, 'f32'), to).toF32(), b = await ops.sumTo(fast.upload(x.data, from, 'f32'), to).toF32();
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) < 1e-5, `sum_to [${from}] → [${to}] at ${i}: ${b[i]} vs ${v}`));
  }
});
