// Tiled attention on WebGPU (prefill and training): the forward pass for T >= 16, the rows' softmax
// statistics and the three gradients given those statistics run in blocks of 16 (or 8) queries × keys
// staged in workgroup memory. Where a device offers less workgroup memory the kernels shrink the tile
// to 8, and below that fall back to one workgroup per row; every path must agree with the CPU.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../src/index.ts';
import * as ops from '../src/tensor/api.ts';
import type { Backend, Tensor } from '../src/tensor/tensor.ts';
import { withGpu } from './gpu-helpers.ts';
import { rand } from './helpers.ts';

const cpu = new CpuBackend();
const [B, T, H, K, D, S, pos0] = [2, 21, 4, 2, 64, 26, [5, 2]];
const scale = 1 / Math.sqrt(D);

/** The forward output, the statistics and the three gradients, on one backend, from the same numbers. */
function all(be: Backend): Tensor[] {
  const r = rand(7);
  const f = (shape: number[]) => be.upload(Float32Array.from({ length: shape.reduce((p, d) => p * d, 1) }, () => r() * 2 - 1), shape, 'f32');
  const [q, k, v, g] = [f([B, T, H, D]), f([B, K, S, D]), f([B, K, S, D]), f([B, T, H, D])];
  const y = ops.attention(q, k, v, pos0, scale);
  const st = ops.attentionStats(q, k, y, g, pos0, scale);
  return [y, st, ...(['q', 'k', 'v'] as const).map((w) => ops.attentionGrad(q, k, v, g, pos0, scale, w, st))];
}

async function close(got: Tensor[], want: Tensor[], what: string) {
  const names = ['attention', 'attention_stats', 'dq', 'dk', 'dv'];
  for (let n = 0; n < want.length; n++) {
    const [a, b] = [await got[n].toF32(), await want[n].toF32()];
    for (let i = 0; i < b.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= 2e-5 * Math.max(1, Math.abs(b[i])), `${what}: ${names[n]}[${i}] ${a[i]} vs ${b[i]}`);
  }
}

// The kernel each op ran, from the profiler's labels (op, kernel variant, shapes).
async function kernels(be: import('../src/index.ts').WebGpuBackend, fn: () => Tensor[]): Promise<{ out: Tensor[]; keys: string[] }> {
  if (!be.features.has('timestamp-query')) return { out: fn(), keys: [] };
  be.startProfile();
  const out = fn();
  const keys = (await be.stopProfile()).map((e) => e.label.split(' ')[1]).sort();
  return { out, keys };
}

for (const [what, storage, expect] of [
  ['16-row tiles (the device\'s limits)', undefined, ['attention_tiled:dk:16:64', 'attention_tiled:dq:16:64', 'attention_tiled:dv:16:64', 'attention_tiled:out:16:64', 'attention_tiled:stats:16:64']],
  ['8-row tiles (9 KB of workgroup memory)', 9000, ['attention_tiled:dk:8:64', 'attention_tiled:dq:8:64', 'attention_tiled:dv:8:64', 'attention_tiled:out:8:64', 'attention_tiled:stats:8:64']],
  ['one workgroup per row (1 KB of workgroup memory)', 1024, ['attention:vec4:64', 'attention_grad:k', 'attention_grad:q', 'attention_grad:v', 'attention_stats:rows']],
] as const) {
  test(`WebGPU attention, statistics and gradients with ${what} equal the CPU reference`, async (t) => {
    await withGpu(t, async (gpu) => {
      // NOTE: the kernel environment is the backend's own; a test narrows the limits it plans against.
      const env = (gpu as unknown as { env: { maxWorkgroupStorage: number } }).env;
      const saved = env.maxWorkgroupStorage;
      try {
        if (storage !== undefined) env.maxWorkgroupStorage = storage;
        const { out, keys } = await kernels(gpu, () => all(gpu));
        if (keys.length) assert.deepEqual(keys, [...expect].sort());
        await close(out, all(cpu), what);
      } finally {
        env.maxWorkgroupStorage = saved;
      }
    });
  });
}

test('attention_stats and attention_grad reject statistics of the wrong shape', () => {
  const z = (shape: number[]) => cpu.zeros(shape, 'f32');
  const [q, k, g] = [z([1, 3, 2, 4]), z([1, 1, 3, 4]), z([1, 3, 2, 4])];
  assert.throws(() => ops.attentionGrad(q, k, k, g, [0], 0.5, 'q', z([1, 3, 2, 1])), /stats \[1, 3, 2, 1\] must be \[1, 3, 2, 2\]/);
  assert.throws(() => ops.attentionStats(q, k, z([1, 3, 2, 3]), g, [0], 0.5), /y \[1, 3, 2, 3\] must match q/);
});
