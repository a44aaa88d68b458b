// Kernel plans without a device: how the GEMV-style kernels group output columns into workgroups
// (KernelEnv.gemvColumns) and where they must lower the number. The values are checked on a device by
// the conformance suite, which runs these kernels with 1, 2, 4 and 8 columns per workgroup.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DType } from '../src/tensor/dtype.ts';
import { WGSL_KERNELS, type KernelEnv, type KernelPlan } from '../src/backends/webgpu/kernels.ts';

const env = (gemvColumns: number): KernelEnv => ({
  features: new Set(), matmulTile: 64, matmulStages: 1, subgroups: false, attentionSplit: 4, gemvColumns, shaderF16: false,
  maxWorkgroupStorage: 16384, maxInvocations: 256,
});
const input = (shape: number[], dtype: DType = 'f32') => ({ shape, dtype });
/** Workgroups a plan dispatches (its grid may be two-dimensional) and its columns per workgroup (from its key). */
const workgroups = (p: KernelPlan) => p.workgroups.reduce((a, b) => a * b, 1);
const columnsOf = (p: KernelPlan, at: number) => Number(p.key.split(':')[at]);

const gemv = (M: number, N: number, K: number, cols: number) =>
  WGSL_KERNELS.matmul.plan([input([M, K]), input([N, K], 'f16')], { transB: true }, [M, N], env(cols));
const linear = (M: number, N: number, K: number, cols: number, glu: boolean) =>
  WGSL_KERNELS.fused_linear.plan([input([M, K]), input([N, K], 'f16'), input([K]), ...(glu ? [input([N, K], 'f16')] : [])],
    { norm: { kind: 'rmsnorm', eps: 1e-5, bias: false, scale: 1 }, bias: false, act: glu ? 'silu' : undefined, glu, residual: false }, [M, N], env(cols));
const qkv = (H: number, KH: number, D: number, R: number, cols: number) => {
  const C = 64;
  return WGSL_KERNELS.fused_qkv.plan([input([1, KH, 16, D]), input([1, KH, 16, D]), input([1, 1, C]), input([H * D, C], 'f16'), input([KH * D, C], 'f16'), input([KH * D, C], 'f16')],
    { bias: false, rope: { invFreq: new Array(R).fill(0.5), headDim: D }, pos0: [3] }, [1, 1, H * D], env(cols));
};

test('GEMV plans: C columns per workgroup take ceil(N / C) workgroups, the last one ragged', () => {
  for (const [N, C, want] of [[7, 1, 7], [7, 2, 4], [7, 4, 2], [7, 8, 1], [4096, 8, 512], [33, 4, 9]] as const) {
    const p = gemv(1, N, 64, C);
    assert.equal(columnsOf(p, 4), C, `N ${N}: key ${p.key}`);
    assert.equal(workgroups(p), want, `N ${N}, ${C} columns`);
    assert.equal(p.params[0], want, 'the jobs the shader guards against');
  }
  // M rows and C columns make M·C sums, at most 40 (the reduction's slots): 8 rows take 4 columns, 5 rows 8.
  assert.equal(columnsOf(gemv(8, 40, 64, 8), 4), 4);
  assert.equal(columnsOf(gemv(6, 40, 64, 8), 4), 4);
  assert.equal(columnsOf(gemv(5, 40, 64, 8), 4), 8);
  assert.equal(columnsOf(gemv(4, 40, 64, 8), 4), 8);
});

test('fused linear plans: GLU and RMSNorm sums lower the columns where 8 rows would overflow the slots', () => {
  // One row: two sums per column (gate and up) and Σx²: 8 columns fit.
  assert.equal(columnsOf(linear(1, 100, 64, 8, true), 4), 8);
  assert.equal(workgroups(linear(1, 100, 64, 8, true)), 13);
  // Eight rows: 16 sums per column plus 8 for Σx²: two columns (40 slots), not four (72).
  assert.equal(columnsOf(linear(8, 100, 64, 8, true), 4), 2);
  assert.equal(columnsOf(linear(8, 100, 64, 8, false), 4), 4);
  // Rows past 8 run in chunks of 8: workgroups = column groups × chunks.
  assert.equal(workgroups(linear(11, 100, 64, 2, false)), 50 * 2);
});

test('fused q k v plans: every workgroup stays within one of q, k and v', () => {
  // Llama-like: 4 heads of 8 with full rope (4 pairs) → q 16 jobs, k 8, v 16: 8 columns divide them all.
  let p = qkv(4, 2, 8, 4, 8);
  assert.equal(columnsOf(p, 4), 8);
  assert.equal(workgroups(p), (16 + 8 + 16) / 8);
  // 3 heads of 2 with one rotary pair each: q 3 jobs, k 3, v 6: only 1 column divides them.
  p = qkv(3, 3, 2, 1, 8);
  assert.equal(columnsOf(p, 4), 1);
  assert.equal(workgroups(p), 12);
  // Partial rope (D 6, R 2: 4 jobs per head), 2 q heads, 1 kv head: q 8, k 4, v 6 → 2 columns.
  p = qkv(2, 1, 6, 2, 4);
  assert.equal(columnsOf(p, 4), 2);
  assert.equal(workgroups(p), 9);
});
