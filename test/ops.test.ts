// Reference CPU ops on hand-checkable cases, dtype conversions, shape errors, and every fast CPU
// kernel against the reference on odd shapes (1, 7, 33, 257).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend, ops, OP_NAMES, ShapeError, UnsupportedOpError, type Tensor } from '../src/index.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, toF32 } from '../src/tensor/dtype.ts';
import { erf } from '../src/backends/cpu/kernels.ts';
import { FAST_KERNELS } from '../src/backends/cpu/fast/kernels.ts';
import { rand } from './helpers.ts';

const ref = new CpuBackend({ reference: true });
const fast = new CpuBackend();
const f32 = (be: CpuBackend, data: number[] | Float32Array, shape: number[]) => be.upload(Float32Array.from(data), shape, 'f32');
const i32 = (be: CpuBackend, data: number[], shape: number[]) => be.upload(Int32Array.from(data), shape, 'i32');
const vals = async (t: Tensor) => Array.from(await t.toF32());
const close = (a: number[], b: number[], tol = 1e-6, msg = '') => {
  assert.equal(a.length, b.length, `${msg} length`);
  a.forEach((x, i) => assert.ok(Math.abs(x - b[i]) <= tol * Math.max(1, Math.abs(b[i])), `${msg}[${i}]: ${x} vs ${b[i]}`));
};

test('dtype conversions are exact where they must be', () => {
  assert.equal(f16ToF32(0x3c00), 1);
  assert.equal(f16ToF32(0xc000), -2);
  assert.equal(f16ToF32(0x0001), 2 ** -24);
  assert.equal(f16ToF32(0x7c00), Infinity);
  assert.ok(Number.isNaN(f16ToF32(0x7e00)));
  assert.equal(bf16ToF32(0x3f80), 1);
  for (let h = 0; h < 65536; h += 7) {
    const x = f16ToF32(h);
    if (Number.isFinite(x) && !Object.is(x, -0)) assert.equal(f32ToF16(x), h, `f16 ${h}`);
    const y = bf16ToF32(h);
    if (!Number.isNaN(y)) assert.equal(f32ToBf16(y), h, `bf16 ${h}`);
  }
  assert.equal(f32ToF16(65520), 0x7c00); // rounds to inf
  assert.equal(f32ToBf16(1 + 2 ** -8), 0x3f80); // ties to even
  assert.deepEqual(Array.from(toF32(Uint16Array.from([0x3c00, 0x4000]), 'f16')), [1, 2]);
});

test('erf matches known values', () => {
  for (const [x, e] of [[0, 0], [0.5, 0.5204998778], [1, 0.8427007929], [-2, -0.995322265], [3, 0.9999779095]])
    assert.ok(Math.abs(erf(x) - e) < 2e-7, `erf(${x})`);
});

test('reference ops: hand-checked cases', async () => {
  const a = f32(ref, [1, 2, 3, 4, 5, 6], [2, 3]);
  const b = f32(ref, [1, 0, 0, 1, 1, 1], [3, 2]);
  assert.deepEqual(await vals(ops.matmul(a, b)), [4, 5, 10, 11]);
  assert.deepEqual(await vals(ops.matmul(a, f32(ref, [1, 0, 1, 0, 1, 0], [2, 3]), true)), [4, 2, 10, 5]);
  assert.deepEqual(await vals(ops.add(a, f32(ref, [10, 20, 30], [3]))), [11, 22, 33, 14, 25, 36]);
  assert.deepEqual(await vals(ops.mul(a, f32(ref, [2, 3], [2, 1]))), [2, 4, 6, 12, 15, 18]);
  assert.deepEqual(await vals(ops.sum(a)), [6, 15]);
  assert.deepEqual(await vals(ops.max(a)), [3, 6]);
  close(await vals(ops.softmax(f32(ref, [0, Math.log(3)], [2]))), [0.25, 0.75]);
  close(await vals(ops.silu(f32(ref, [0, 1], [2]))), [0, 1 / (1 + Math.exp(-1))]);
  close(await vals(ops.relu(f32(ref, [-1, 2], [2]))), [0, 2]);
  close(await vals(ops.geluErf(f32(ref, [1], [1]))), [0.8413447460685429], 1e-6);
  close(await vals(ops.geluTanh(f32(ref, [1], [1]))), [0.8411919906082768], 1e-6);
  close(await vals(ops.layernorm(f32(ref, [1, 3], [1, 2]), f32(ref, [1, 2], [2]), f32(ref, [0, 1], [2]), 0)), [-1, 3], 1e-6);
  close(await vals(ops.rmsnorm(f32(ref, [3, 4], [1, 2]), f32(ref, [1, 1], [2]), 0)), [3 / Math.sqrt(12.5), 4 / Math.sqrt(12.5)]);
  assert.deepEqual(await vals(ops.gatherRows(a, i32(ref, [1, 0, 1], [3]))), [4, 5, 6, 1, 2, 3, 4, 5, 6]);
  assert.deepEqual(await vals(ops.indexAddRows(a, f32(ref, [1, 1, 1, 2, 2, 2], [2, 3]), i32(ref, [1, 1], [2]))), [1, 2, 3, 7, 8, 9]);
  const x = f32(ref, [0.1, 0.9, 0.5, 0.9], [1, 4]);
  assert.deepEqual(await vals(ops.topk(x, 3)), [1, 3, 2]); // ties → lower index first
  close(await vals(ops.gather(x, i32(ref, [3, 0], [1, 2]))), [0.9, 0.1]);
  assert.deepEqual(await vals(ops.concat(a, f32(ref, [7, 8], [2, 1]), 1)), [1, 2, 3, 7, 4, 5, 6, 8]);
  assert.deepEqual(await vals(ops.concat(a, f32(ref, [7, 8, 9], [1, 3]), 0)), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const ids = ops.concat(i32(ref, [5], [1, 1]), i32(ref, [9, 2], [1, 2]), 1);
  assert.equal(ids.dtype, 'i32');
  assert.deepEqual(Array.from(ref.view(ids)), [5, 9, 2]);
  // rope by 90° at position 1 with inverse frequency π/2 rotates (x1, x2) → (-x2, x1).
  close(await vals(ops.rope(f32(ref, [1, 2], [1, 1, 1, 2]), [1], [Math.PI / 2])), [-2, 1], 1e-6);
});

test('attention: causal mask, GQA head sharing, cache positions', async () => {
  // One kv head shared by two query heads; query at position 1 sees keys 0..1.
  const q = f32(ref, [1, 0, 0, 1, /* t=1 */ 1, 0, 0, 1], [1, 2, 2, 2]);
  const k = f32(ref, [1, 0, 0, 1], [1, 1, 2, 2]);
  const v = f32(ref, [10, 0, 0, 20], [1, 1, 2, 2]);
  const out = await vals(ops.attention(q, k, v, [0], 1));
  close(out.slice(0, 4), [10, 0, 10, 0]); // t=0 sees only key 0
  const w = Math.exp(1) / (Math.exp(1) + 1);
  close(out.slice(4), [10 * w, 20 * (1 - w), 10 * (1 - w), 20 * w]);
  const probs = await vals(ops.attentionProbs(q, k, [0], 1));
  close(probs, [1, 0, w, 1 - w, 1, 0, 1 - w, w]);
  // kv_write turns (B, T, K, D) rows into the head-major cache (B, K, S, D) at position pos0.
  const cache = ref.zeros([1, 2, 3, 2], 'f32');
  ops.kvWrite(cache, f32(ref, [1, 2, 3, 4], [1, 1, 2, 2]), [1]);
  assert.deepEqual(await vals(cache), [0, 0, 1, 2, 0, 0, 0, 0, 3, 4, 0, 0]);
});

test('shape errors and unsupported dtypes are typed', () => {
  const a = f32(ref, [1, 2, 3, 4, 5, 6], [2, 3]);
  assert.throws(() => ops.matmul(a, a), (e: unknown) => e instanceof ShapeError && /inner dims differ/.test((e as Error).message));
  assert.throws(() => ops.add(a, f32(ref, [1, 2], [2])), ShapeError);
  assert.throws(() => ops.topk(a, 4), ShapeError);
  assert.throws(() => ops.silu(i32(ref, [1], [1])), UnsupportedOpError);
  assert.throws(() => ops.concat(a, f32(ref, [1, 2], [1, 2]), 0), /concat: \[2, 3\] and \[1, 2\] differ outside axis 0/);
  assert.throws(() => ops.concat(a, a, 2), /axis 2 outside the 2 axes/);
  assert.throws(() => ops.concat(i32(ref, [1], [1]), f32(ref, [1], [1]), 0), /inputs are i32 and f32; expected one dtype/);
  assert.throws(() => ref.upload(new Uint16Array(1), [1], 'f16'), UnsupportedOpError);
});

test('every op has a reference kernel and a shape rule', () => {
  for (const op of OP_NAMES) assert.ok(ref.supports(op, 'f32'), op);
});

test('fast CPU kernels equal the reference on odd shapes', async () => {
  const r = rand(7);
  const data = (n: number) => Float32Array.from({ length: n }, () => r() * 2 - 1);
  const pair = (shape: number[]) => { const d = data(shape.reduce((p, x) => p * x, 1)); return [f32(ref, d, shape), f32(fast, d, shape)]; };
  assert.ok(Object.keys(FAST_KERNELS).length > 0);
  for (const [M, N, K] of [[1, 7, 33], [7, 1, 257], [33, 257, 7], [257, 33, 1], [1, 257, 257], [64, 96, 80]]) {
    for (const transB of [false, true]) {
      const [a1, a2] = pair([M, K]), [b1, b2] = pair(transB ? [N, K] : [K, N]);
      close(await vals(ops.matmul(a2, b2, transB)), await vals(ops.matmul(a1, b1, transB)), 1e-5, `matmul ${M}x${N}x${K} ${transB}`);
    }
  }
  const [a1, a2] = pair([3, 7, 33]), [b1, b2] = pair([3, 33, 5]);
  close(await vals(ops.matmul(a2, b2)), await vals(ops.matmul(a1, b1)), 1e-5, 'batched matmul');
  for (const [B, T, H, K, D, S] of [[1, 1, 1, 1, 1, 1], [2, 7, 4, 2, 33, 9], [1, 33, 6, 1, 8, 40]]) {
    const [q1, q2] = pair([B, T, H, D]), [k1, k2] = pair([B, K, S, D]), [v1, v2] = pair([B, K, S, D]);
    const pos0 = Array.from({ length: B }, (_, b) => S - T - b > 0 ? S - T - b : 0);
    close(await vals(ops.attention(q2, k2, v2, pos0, 0.3)), await vals(ops.attention(q1, k1, v1, pos0, 0.3)), 1e-5, `attention ${B},${T},${H},${K},${D},${S}`);
  }
});

test('fast elementwise, norm and gather kernels equal the reference', async () => {
  const r = rand(11);
  const data = (n: number) => Float32Array.from({ length: n }, () => r() * 4 - 2);
  const both = (shape: number[]) => { const d = data(shape.reduce((p, x) => p * x, 1)); return [f32(ref, d, shape), f32(fast, d, shape)]; };
  const [a1, a2] = both([3, 7, 33]);
  for (const bs of [[3, 7, 33], [33], [1, 33], [7, 33], [3, 1, 33], [3, 7, 1]]) {
    const [b1, b2] = both(bs);
    for (const f of [ops.add, ops.sub, ops.mul, ops.div]) close(await vals(f(a2, b2)), await vals(f(a1, b1)), 1e-6, `${f.name} ${bs}`);
  }
  close(await vals(ops.silu(a2)), await vals(ops.silu(a1)), 1e-6, 'silu');
  const [w1, w2] = both([33]), [c1, c2] = both([33]);
  close(await vals(ops.rmsnorm(a2, w2, 1e-5)), await vals(ops.rmsnorm(a1, w1, 1e-5)), 1e-6, 'rmsnorm');
  close(await vals(ops.layernorm(a2, w2, c2, 1e-5)), await vals(ops.layernorm(a1, w1, c1, 1e-5)), 1e-5, 'layernorm');
  const [t1, t2] = both([257, 7]);
  assert.deepEqual(await vals(ops.gatherRows(t2, i32(fast, [256, 0, 5], [3]))), await vals(ops.gatherRows(t1, i32(ref, [256, 0, 5], [3]))));
  assert.throws(() => ops.gatherRows(t2, i32(fast, [257], [1])), RangeError);
});
