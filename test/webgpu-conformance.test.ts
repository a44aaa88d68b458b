// Backend conformance: every op × dtype on WebGPU against the CPU reference, on odd shapes (1, 7, 33,
// 257 and friends), with an explicit skip list. Shapes stay small: in CI this runs on SwiftShader.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend, OP_NAMES, ops, UnsupportedOpError, type Backend, type OpName, type Tensor } from '../src/index.ts';
import { fromF32, toF32 } from '../src/tensor/dtype.ts';
import { withGpu } from './gpu-helpers.ts';
import { rand } from './helpers.ts';

const ref = new CpuBackend({ reference: true });

/** Ops × dtypes WebGPU does not run, and why (reported, not failed). */
const SKIPS: Partial<Record<OpName, string>> = {};

type Case = { name: string; run: (be: Backend, mk: Maker) => Tensor; tol?: number };
type Maker = { f: (shape: number[], scale?: number) => Tensor; i: (data: number[], shape: number[]) => Tensor; w: (shape: number[], dtype: 'f32' | 'f16' | 'bf16') => Tensor };

function makers(seed: number, be: Backend): Maker {
  const r = rand(seed);
  return {
    f: (shape, scale = 1) => be.upload(Float32Array.from({ length: shape.reduce((p, d) => p * d, 1) }, () => (r() * 2 - 1) * scale), shape, 'f32'),
    i: (data, shape) => be.upload(Int32Array.from(data), shape, 'i32'),
    w: (shape, dtype) => {
      const d = Float32Array.from({ length: shape.reduce((p, x) => p * x, 1) }, () => r() * 2 - 1);
      if (dtype === 'f32') return be.upload(d, shape, 'f32');
      const bits = fromF32(d, dtype);
      // The CPU reference sees the same (rounded) values in f32.
      return be.supports('matmul', dtype) ? be.upload(bits, shape, dtype) : be.upload(toF32(bits, dtype), shape, 'f32');
    },
  };
}

const CASES: Record<OpName, Case[]> = {
  matmul: [
    ...[[1, 7, 33], [7, 1, 257], [33, 257, 7], [65, 33, 70], [3, 64, 64], [8, 40, 24]].flatMap(([M, N, K]) => (['f32', 'f16', 'bf16'] as const).flatMap((dt) => [
      { name: `${M}x${N}x${K} transB ${dt}`, run: (_, m) => ops.matmul(m.f([M, K]), m.w([N, K], dt), true) },
      { name: `${M}x${N}x${K} ${dt}`, run: (_, m) => ops.matmul(m.f([M, K]), m.w([K, N], dt)) },
    ] as Case[])),
    { name: 'batched with shared b', run: (_, m) => ops.matmul(m.f([2, 3, 5, 16]), m.w([9, 16], 'f16'), true) },
    { name: 'batched b', run: (_, m) => ops.matmul(m.f([3, 7, 33]), m.f([3, 33, 5])) },
  ],
  add: [{ name: 'same', run: (_, m) => ops.add(m.f([7, 33]), m.f([7, 33])) }, { name: 'row bias', run: (_, m) => ops.add(m.f([3, 7, 33]), m.f([33])) },
    { name: 'general', run: (_, m) => ops.add(m.f([3, 1, 33]), m.f([7, 1])) }, { name: 'left repeat', run: (_, m) => ops.add(m.f([33]), m.f([2, 33])) }],
  sub: [{ name: 'same', run: (_, m) => ops.sub(m.f([257]), m.f([257])) }],
  mul: [{ name: 'column', run: (_, m) => ops.mul(m.f([7, 33]), m.f([7, 1])) }, { name: 'same', run: (_, m) => ops.mul(m.f([1]), m.f([1])) }],
  div: [{ name: 'row', run: (_, m) => ops.div(m.f([7, 33]), ops.add(m.f([33], 0.1), m.f([1], 0.1).backend.upload(Float32Array.from([2]), [1], 'f32'))) }],
  scale: [{ name: '257', run: (_, m) => ops.scale(m.f([257]), -1.5) }],
  silu: [{ name: '257', run: (_, m) => ops.silu(m.f([257], 6)) }],
  relu: [{ name: '33', run: (_, m) => ops.relu(m.f([33])) }],
  gelu_erf: [{ name: '257', run: (_, m) => ops.geluErf(m.f([257], 5)) }],
  gelu_tanh: [{ name: '257', run: (_, m) => ops.geluTanh(m.f([257], 5)) }],
  softmax: [{ name: '7x33', run: (_, m) => ops.softmax(m.f([7, 33], 5)) }, { name: '1x1', run: (_, m) => ops.softmax(m.f([1, 1])) }, { name: '2x1000', run: (_, m) => ops.softmax(m.f([2, 1000], 8)) }],
  sum: [{ name: '7x257', run: (_, m) => ops.sum(m.f([7, 257])) }],
  max: [{ name: '7x257', run: (_, m) => ops.max(m.f([7, 257])) }],
  layernorm: [{ name: 'bias', run: (_, m) => ops.layernorm(m.f([7, 33]), m.f([33]), m.f([33]), 1e-5) }, { name: 'no bias', run: (_, m) => ops.layernorm(m.f([2, 257]), m.f([257]), undefined, 1e-5) }],
  rmsnorm: [{ name: '7x33', run: (_, m) => ops.rmsnorm(m.f([7, 33]), m.f([33]), 1e-5) }, { name: '1x257', run: (_, m) => ops.rmsnorm(m.f([1, 257]), m.f([257]), 1e-6) }],
  rope: [{ name: 'full, far positions', run: (_, m) => ops.rope(m.f([2, 7, 3, 8]), [0, 1000], [1, 0.1, 0.01, 0.001]) },
    { name: 'partial', run: (_, m) => ops.rope(m.f([1, 5, 2, 16]), [3], [1, 0.3, 0.05]) }],
  gather_rows: (['f32', 'f16', 'bf16'] as const).map((dt) => ({ name: dt, run: (_, m) => ops.gatherRows(m.w([257, 7], dt), m.i([256, 0, 5, 5], [2, 2])) })),
  index_add_rows: [{ name: 'repeated rows', run: (_, m) => ops.indexAddRows(m.f([7, 33]), m.f([4, 33]), m.i([6, 0, 6, 2], [4])) }],
  topk: [{ name: '7x33 k3', run: (_, m) => ops.topk(m.f([7, 33]), 3) }, { name: 'ties', run: (be) => ops.topk(be.upload(Float32Array.from([1, 3, 3, 0, 3]), [1, 5], 'f32'), 4) }],
  gather: [{ name: '7x33', run: (_, m) => ops.gather(m.f([7, 33]), m.i(Array.from({ length: 14 }, (_, i) => (i * 5) % 33), [7, 2])) }],
  kv_write: [{ name: 'two rows', run: (_, m) => ops.kvWrite(m.f([2, 3, 9, 8]), m.f([2, 4, 3, 8]), [5, 0]) }],
  attention: [
    ...[[1, 1, 1, 1, 1, 1], [2, 7, 4, 2, 33, 9], [1, 33, 6, 1, 8, 40], [1, 3, 2, 2, 130, 70], [2, 1, 8, 2, 64, 300]].map(([B, T, H, K, D, S]) => ({
      name: `B${B} T${T} H${H} K${K} D${D} S${S}`,
      run: (_: Backend, m: Maker) => ops.attention(m.f([B, T, H, D]), m.f([B, K, S, D]), m.f([B, K, S, D]), Array.from({ length: B }, (_, b) => Math.max(0, S - T - b)), 1 / Math.sqrt(D)),
    })),
  ],
  attention_probs: [{ name: 'B2 T5', run: (_, m) => ops.attentionProbs(m.f([2, 5, 4, 8]), m.f([2, 2, 9, 8]), [4, 1], 0.35) }],
};

test('conformance: every op has cases', () => {
  for (const op of OP_NAMES) assert.ok(CASES[op].length > 0 || SKIPS[op], `no conformance case for ${op}`);
});

for (const op of OP_NAMES) {
  test(`conformance: ${op} on WebGPU equals the CPU reference`, async (t) => {
    if (SKIPS[op]) return t.skip(SKIPS[op]);
    await withGpu(t, async (gpu) => {
      for (const [ci, c] of CASES[op].entries()) {
        const want = c.run(ref, makers(100 + ci, ref));
        const got = c.run(gpu, makers(100 + ci, gpu));
        assert.deepEqual(got.shape, want.shape, `${op} ${c.name}: shape`);
        assert.equal(got.dtype, want.dtype, `${op} ${c.name}: dtype`);
        const [g, w] = [Array.from(await got.toF32()), Array.from(await want.toF32())];
        const tol = c.tol ?? 2e-5;
        g.forEach((x, i) => assert.ok(Math.abs(x - w[i]) <= tol * Math.max(1, Math.abs(w[i])), `${op} ${c.name}[${i}]: ${x} vs ${w[i]}`));
      }
    });
  });
}

test('WebGPU rejects what it does not run, with a typed error', async (t) => {
  await withGpu(t, async (gpu) => {
    const h = gpu.upload(new Uint16Array(4), [4], 'f16');
    assert.throws(() => ops.silu(h), UnsupportedOpError);
  });
});
