// Bounds checking of WGSL kernels (src/backends/webgpu/bounds.ts): the rewrite itself, a kernel that
// indexes outside its input caught with its access site named, and the real kernels running clean
// under the checker (the conformance and attention-tile suites, in a child process with
// BRICKWORK_WEBGPU_CHECK_BOUNDS=1).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkBounds } from '../src/backends/webgpu/bounds.ts';
import { WGSL_KERNELS } from '../src/backends/webgpu/kernels.ts';
import { BrickworkError, NoWebGpuError, WebGpuBackend, ops } from '../src/index.ts';
import { gpu } from './gpu-helpers.ts';

const KERNEL = `struct Params { w: array<vec4<u32>, 64> };
@group(0) @binding(0) var<uniform> p: Params;
fn u(i: u32) -> u32 { return p.w[i / 4u][i % 4u]; }
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
var<workgroup> tile: array<array<f32, 64>, 16>;
var<workgroup> quads: array<vec4<f32>, 8>;
fn main(i: u32, j: u32) { tile[i][j + 1u] = a[u32(o[i]) + 2u].y; quads[j][i % 4u] = o[u(3u)]; }`;

test('checkBounds: every storage, workgroup and parameter index goes through bw_chk with its site', () => {
  const { code, sites } = checkBounds(KERNEL);
  assert.deepEqual(sites, ['tile[i]', 'tile[…][j + 1u]', 'o[i]', 'a[u32(o[i]) + 2u]', 'quads[j]', 'quads[…][i % 4u]', 'o[u(3u)]', 'p.w[i / 4u] (kernel parameter)']);
  // Nested indices are checked inside out; a storage array's bound is its arrayLength, a workgroup
  // array's the declared size of each level (a vec4 element has 4); the vector component of a[…] is left alone.
  assert.match(code, /tile\[bw_chk\(u32\(i\), 16u, 0u\)\]\[bw_chk\(u32\(j \+ 1u\), 64u, 1u\)\] = a\[bw_chk\(u32\(u32\(o\[bw_chk\(u32\(i\), arrayLength\(&o\), 2u\)\]\) \+ 2u\), arrayLength\(&a\), 3u\)\]\.y;/);
  assert.match(code, /quads\[bw_chk\(u32\(j\), 8u, 4u\)\]\[bw_chk\(u32\(i % 4u\), 4u, 5u\)\] = o\[bw_chk\(u32\(u\(3u\)\), arrayLength\(&o\), 6u\)\];/);
  assert.match(code, /return p\.w\[bw_chk\(i \/ 4u, 64u, 7u\)\]\[i % 4u\];/);
  // The counters come first (after any directive); declarations are untouched.
  assert.ok(code.startsWith('@group(1) @binding(0) var<storage, read_write> bw_oob: array<atomic<u32>, 64>;'));
  assert.ok(code.includes('var<storage, read> a: array<vec4<f32>>;') && code.includes('var<workgroup> tile: array<array<f32, 64>, 16>;'));
  assert.ok(checkBounds(`enable f16;\n${KERNEL}`).code.startsWith('enable f16;\n@group(1)'));
});

test('WebGPU bounds checking: a kernel that reads past its input raises OutOfBoundsError naming the access', async (t) => {
  const why = await gpu();
  if (typeof why === 'string') return void t.skip(why);
  let be: WebGpuBackend;
  try {
    be = await WebGpuBackend.create({ checkBounds: true });
  } catch (e) {
    if (e instanceof NoWebGpuError) return void t.skip(e.message);
    throw e;
  }
  assert.equal(be.checksBounds, true);
  const x = be.upload(Float32Array.from({ length: 100 }, (_, i) => i), [100], 'f32');
  const good = await ops.silu(x).toF32(); // a real kernel: no violation
  assert.ok(Math.abs(good[3] - 3 / (1 + Math.exp(-3))) < 1e-5);
  // silu's plan swapped for one whose every thread reads 7 elements ahead: the last 7 go past the end.
  const kernels = WGSL_KERNELS as unknown as Record<string, { plan: (...a: unknown[]) => unknown }>;
  const plan = kernels.silu.plan;
  kernels.silu.plan = () => ({
    key: 'test-read-ahead', workgroups: [2, 1, 1], params: [100],
    wgsl: () => `struct Params { w: array<vec4<u32>, 64> };
@group(0) @binding(0) var<uniform> p: Params;
fn u(i: u32) -> u32 { return p.w[i / 4u][i % 4u]; }
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < u(0u)) { o[g.x] = a[g.x + 7u]; }
}`,
  });
  try {
    const y = ops.silu(x);
    await assert.rejects(y.toF32(), (e: unknown) => e instanceof BrickworkError && e.code === 'E_OUT_OF_BOUNDS'
      && /silu test-read-ahead 100/.test(e.message) && /a\[g\.x \+ 7u\] \(7×\)/.test(e.message));
  } finally {
    kernels.silu.plan = plan;
  }
  // Reported once: with the real kernel back, the next read is clean.
  assert.deepEqual(await ops.silu(x).toF32(), good);
  be.destroy();
});

test('WebGPU: an op that binds more tensors than the device allows gets E_BINDINGS up front', async (t) => {
  const why = await gpu();
  if (typeof why === 'string') return void t.skip(why);
  const be = await WebGpuBackend.create({ checkBounds: true });
  // The checker's counters take one of the device's storage buffers per shader stage.
  assert.equal(be.maxOpTensors, be.device.limits.maxStorageBuffersPerShaderStage - 1);
  const n = be.maxOpTensors + 1; // q, k, v with biases and a LayerNorm: 7 + 2 + 3 tensors; trim to n
  const f = (shape: number[]) => be.zeros(shape, 'f32');
  const cache = { k: f([1, 1, 4, 2]), v: f([1, 1, 4, 2]) };
  const parts = { x: f([1, 1, 4]), wq: f([2, 4]), wk: f([2, 4]), wv: f([2, 4]) };
  const extra = n - 7; // tensors beyond the plain form, from norm weight, norm bias and the biases
  assert.ok(extra >= 1 && extra <= 5, `this test needs a device with 7 to 11 storage buffers per op, found ${be.maxOpTensors}`);
  const norm = extra === 1 || extra === 4 ? { kind: 'rmsnorm' as const, eps: 1e-5, w: f([4]) } : extra === 2 || extra === 5 ? { kind: 'layernorm' as const, eps: 1e-5, w: f([4]), b: f([4]) } : undefined;
  const bias = extra >= 3 ? { q: f([2]), k: f([2]), v: f([2]) } : undefined;
  assert.throws(() => ops.fusedQkv(cache, { ...parts, norm, bias }, [0]),
    (e: unknown) => e instanceof BrickworkError && e.code === 'E_BINDINGS' && new RegExp(`fused_qkv binds ${n} tensors; this backend allows ${n - 1} per op`).test(e.message) && /bounds checker/.test(e.message));
  be.destroy();
});

/** This process's environment without the test runner's marker (a child `node --test` would report to us in its own format). */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

test('WebGPU bounds checking: the conformance and attention-tile suites index only inside their arrays', async (t) => {
  const why = await gpu();
  if (typeof why === 'string') return void t.skip(why);
  const root = fileURLToPath(new URL('..', import.meta.url));
  const r = spawnSync(process.execPath, ['--import', './scripts/ts.mjs', '--test', 'test/webgpu-conformance.test.ts', 'test/webgpu-attention-tiles.test.ts'], {
    cwd: root, encoding: 'utf8', timeout: 900_000, env: { ...childEnv(), BRICKWORK_WEBGPU_CHECK_BOUNDS: '1' },
  });
  const tail = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => /^# (tests|pass|fail)|E_OUT_OF_BOUNDS|not ok/.test(l)).join('\n');
  assert.equal(r.status, 0, tail);
  assert.match(r.stdout, /^# fail 0$/m);
  assert.doesNotMatch(r.stdout, /^# pass 0$/m);
});
