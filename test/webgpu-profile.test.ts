// Per-dispatch GPU timing (WebGpuBackend.startProfile / stopProfile): every dispatch is counted under
// its op, kernel variant and shapes, results are unchanged, and misuse gets a clear error.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BrickworkError, ops } from '../src/index.ts';
import { withGpu } from './gpu-helpers.ts';

test('WebGPU profile: each dispatch is timed under its op and shapes; values are unchanged', (t) => withGpu(t, async (be) => {
  if (!be.features.has('timestamp-query')) {
    assert.throws(() => be.startProfile(), (e: unknown) => e instanceof BrickworkError && /timestamp-query/.test(e.message));
    return void t.skip(`adapter ${be.info.description} has no timestamp-query feature (the error was checked)`);
  }
  await assert.rejects(be.stopProfile(), (e: unknown) => e instanceof BrickworkError && /no profile running/.test(e.message));
  const a = be.upload(Float32Array.from({ length: 6 * 5 }, (_, i) => i / 7 - 2), [6, 5], 'f32');
  const b = be.upload(Float32Array.from({ length: 5 * 3 }, (_, i) => (i % 4) - 1.5), [5, 3], 'f32');
  const plain = await ops.add(ops.matmul(a, b), ops.matmul(a, b)).toF32();

  be.startProfile();
  const d0 = be.stats.dispatches;
  const x = ops.matmul(a, b);
  const y = ops.matmul(a, b);
  const z = ops.add(x, y);
  const profiled = await z.toF32();
  const w = ops.silu(z); // recorded after the read: a second submit within the same profile
  await w.toF32();
  const entries = await be.stopProfile();
  assert.deepEqual(profiled, plain);
  assert.equal(entries.reduce((s, e) => s + e.count, 0), be.stats.dispatches - d0);
  const mm = entries.find((e) => e.label.startsWith('matmul '));
  assert.ok(mm, `no matmul entry in ${entries.map((e) => e.label).join('; ')}`);
  assert.equal(mm.count, 2);
  assert.match(mm.label, / 6x5 5x3$/);
  assert.ok(entries.some((e) => e.label.startsWith('add ') && e.count === 1));
  assert.ok(entries.some((e) => e.label.startsWith('silu ') && e.count === 1));
  for (const e of entries) assert.ok(Number.isFinite(e.ms) && e.ms >= 0, `${e.label}: ${e.ms} ms`);
  assert.ok(entries.reduce((s, e) => s + e.ms, 0) > 0, 'all timestamps were equal');
  // Dawn's timestamp quantization (multiples of 65,536 ns) is off: not every total is such a multiple.
  assert.ok(entries.some((e) => Math.round(e.ms * 1e6) % 65536 !== 0), `quantized timestamps: ${entries.map((e) => e.ms * 1e6).join(', ')} ns`);
  for (let i = 1; i < entries.length; i++) assert.ok(entries[i - 1].ms >= entries[i].ms, 'entries are sorted by time');

  // A new profile starts empty; work after stopProfile is not timed.
  ops.add(x, y).dispose();
  be.startProfile();
  ops.matmul(a, b).dispose();
  const again = await be.stopProfile();
  assert.deepEqual(again.map((e) => [e.label.split(' ')[0], e.count]), [['matmul', 1]]);
  for (const tt of [a, b, x, y, z, w]) tt.dispose();
}));

test('generate --profile --json reports the costliest kernels of the run on WebGPU', (t) => withGpu(t, async (be) => {
  if (!be.features.has('timestamp-query')) return void t.skip(`adapter ${be.info.description} has no timestamp-query feature`);
  const { spawnSync } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const root = fileURLToPath(new URL('..', import.meta.url));
  const r = spawnSync(process.execPath, ['--import', './scripts/ts.mjs', 'src/cli/main.ts', 'generate', '--device', 'webgpu', '--prompt', 'Once upon a time',
    '--max-new-tokens', '2', '--json', '--profile', '3'], { cwd: root, encoding: 'utf8', timeout: 240_000 });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { new_ids: number[]; gpu_ms: number; profile: { label: string; count: number; ms: number }[] };
  assert.equal(out.new_ids.length, 2);
  assert.equal(out.profile.length, 3);
  assert.ok(out.gpu_ms > 0 && out.profile.every((e) => e.ms > 0 && e.count > 0 && e.ms <= out.gpu_ms), JSON.stringify(out.profile));
  for (let i = 1; i < out.profile.length; i++) assert.ok(out.profile[i - 1].ms >= out.profile[i].ms, 'sorted by GPU time');
  // The prompt's prefill runs unfused matmuls; the decoding step runs fused_linear: both show up among the kernels.
  assert.ok(out.profile.some((e) => /^(matmul|fused_linear|fused_kv_write|fused_qkv) /.test(e.label)), JSON.stringify(out.profile));
}));
