// Backend conformance: every op × dtype on WebGPU against the CPU reference, on odd shapes (1, 7, 33,
// 257 and friends), with an explicit skip list. Shapes stay small: in CI this runs on SwiftShader.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { BrickworkError, CpuBackend, OP_NAMES, ops, UnsupportedOpError, WebGpuBackend, type OpName, type Tensor } from '../src/index.ts';
import { CASES, makers, SKIPS } from './conformance-cases.ts';
import { withGpu } from './gpu-helpers.ts';

const ref = new CpuBackend({ reference: true });

test('conformance: every op has cases', () => {
  for (const op of OP_NAMES) assert.ok(CASES[op].length > 0 || SKIPS[op], `no conformance case for ${op}`);
});

/** Ops whose small-M kernels compute several output columns per workgroup (WebGpuBackend.gemvColumns). */
const GEMV_OPS = new Set<OpName>(['matmul', 'fused_linear', 'fused_kv_write', 'fused_qkv']);

/** Kernel choices besides subgroups and shader-f16: GEMV columns per workgroup, and the 128-wide matmul tile's buffers. */
type Variant = { columns: number; stages: 1 | 2 };

/**
 * Runs op's cases on gpu (with or without subgroup reductions, f16 as WGSL f16 or u32 pairs, the given
 * variant) against the CPU reference.
 */
async function checkCases(t: TestContext, gpu: WebGpuBackend, op: OpName, subgroups: boolean, shaderF16: boolean, { columns, stages }: Variant): Promise<void> {
  gpu.useSubgroups = subgroups;
  gpu.useShaderF16 = shaderF16;
  gpu.gemvColumns = columns;
  gpu.matmulStages = stages;
  for (const [ci, c] of CASES[op].entries()) {
    const wants = [c.run(ref, makers(100 + ci, ref))].flat();
    let gots: Tensor[];
    try {
      gots = [c.run(gpu, makers(100 + ci, gpu))].flat();
    } catch (e) {
      // Under the bounds checker (one binding fewer) the widest fused cases may not fit the device.
      if (e instanceof BrickworkError && e.code === 'E_BINDINGS' && gpu.checksBounds) { t.diagnostic(`${op} ${c.name}: ${e.message}`); continue; }
      throw e;
    }
    for (const [ti, got] of gots.entries()) {
      const want = wants[ti], what = `${op} ${c.name}${gots.length > 1 ? ` (result ${ti})` : ''}${subgroups ? ', subgroups' : ''}${shaderF16 ? ', shader-f16' : ''}${GEMV_OPS.has(op) ? `, ${columns} GEMV columns` : ''}${stages === 2 ? ', two-stage tile 128' : ''}`;
      assert.deepEqual(got.shape, want.shape, `${what}: shape`);
      assert.equal(got.dtype, want.dtype, `${what}: dtype`);
      const [g, w] = [Array.from(await got.toF32()), Array.from(await want.toF32())];
      const tol = c.tol ?? 2e-5;
      g.forEach((x, i) => assert.ok(Math.abs(x - w[i]) <= tol * Math.max(1, Math.abs(w[i])), `${what}[${i}]: ${x} vs ${w[i]}`));
    }
  }
}

for (const op of OP_NAMES) {
  test(`conformance: ${op} on WebGPU equals the CPU reference`, async (t) => {
    if (SKIPS[op]) return t.skip(SKIPS[op]);
    await withGpu(t, async (gpu) => {
      // Reductions join threads with subgroup operations where the device has them, else with a
      // shared-memory tree: both kernels are checked where both can run.
      // Likewise f16 tensors are bound as WGSL f16 where the adapter has shader-f16 (every shader then
      // opens with `enable f16;`), else as u32 pairs; test/webgpu-shader-f16.test.ts compiles the former anywhere.
      // The GEMV-style kernels run with 1, 2, 4 and 8 output columns per workgroup, and the 128-wide
      // matmul tile with one and two shared-memory buffers (with the first reduction and f16 setting;
      // the others with the defaults).
      const initial = [gpu.useSubgroups, gpu.useShaderF16, gpu.gemvColumns, gpu.matmulStages] as const;
      const shipped: Variant = { columns: initial[2], stages: initial[3] };
      const variants: Variant[] = [
        ...(GEMV_OPS.has(op) ? [1, 2, 4, 8].map((columns) => ({ columns, stages: shipped.stages })) : [shipped]),
        ...(op === 'matmul' ? [{ columns: shipped.columns, stages: (3 - shipped.stages) as 1 | 2 }] : []),
      ];
      if (!gpu.subgroupsAvailable) t.diagnostic('this device has no subgroups: only the shared-memory reductions are checked');
      if (!gpu.shaderF16Available) t.diagnostic('this device has no shader-f16: f16 is checked as u32 pairs only');
      try {
        let first = true;
        for (const sub of gpu.subgroupsAvailable ? [true, false] : [false]) {
          for (const f16 of gpu.shaderF16Available ? [true, false] : [false]) {
            for (const v of first ? variants : [shipped]) await checkCases(t, gpu, op, sub, f16, v);
            first = false;
          }
        }
      } finally {
        [gpu.useSubgroups, gpu.useShaderF16, gpu.gemvColumns, gpu.matmulStages] = initial;
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

test('WebGPU attentionSplit: a value that is not a whole number of blocks is a clear error, before any device is made', async (t) => {
  await withGpu(t, async (gpu) => {
    const saved = gpu.attentionSplit;
    for (const bad of [-1, 2.5, Number.NaN]) assert.throws(() => { gpu.attentionSplit = bad; }, /attentionSplit is .*; expected a whole number of 256-key blocks/);
    assert.equal(gpu.attentionSplit, saved);
    await assert.rejects(WebGpuBackend.create({ attentionSplit: -2 }), /attentionSplit is -2/);
    const env = process.env.BRICKWORK_ATTENTION_SPLIT;
    process.env.BRICKWORK_ATTENTION_SPLIT = 'many';
    try {
      await assert.rejects(WebGpuBackend.create(), /BRICKWORK_ATTENTION_SPLIT is 'many'; expected a whole number/);
    } finally {
      if (env === undefined) delete process.env.BRICKWORK_ATTENTION_SPLIT; else process.env.BRICKWORK_ATTENTION_SPLIT = env;
    }
  });
});

test('WebGPU shader-f16: asking for it where the adapter lacks it is a clear error, and so is a bad BRICKWORK_SHADER_F16', async (t) => {
  await withGpu(t, async (gpu) => {
    const env = process.env.BRICKWORK_SHADER_F16;
    process.env.BRICKWORK_SHADER_F16 = 'yes';
    try {
      await assert.rejects(WebGpuBackend.create(), /BRICKWORK_SHADER_F16 is 'yes'; expected 0 .* or 1/);
    } finally {
      if (env === undefined) delete process.env.BRICKWORK_SHADER_F16; else process.env.BRICKWORK_SHADER_F16 = env;
    }
    if (gpu.shaderF16Available) { t.diagnostic('this adapter offers shader-f16: the error for adapters without it is not checked here'); return; }
    assert.equal(gpu.useShaderF16, false);
    assert.throws(() => { gpu.useShaderF16 = true; }, /shader-f16 was asked for, but this adapter .* does not offer it/);
    await assert.rejects(WebGpuBackend.create({ shaderF16: true }), (e: unknown) => e instanceof BrickworkError && e.code === 'E_OPTION' && /unset/.test(e.hint ?? ''));
  });
});

test('WebGPU gemvColumns (1, 2, 4 or 8), matmulTile and matmulStages: anything else is a clear error (setter, option, environment) before any device is made', async (t) => {
  await withGpu(t, async (gpu) => {
    const saved = gpu.gemvColumns;
    for (const bad of [0, 3, 16, 2.5, Number.NaN]) assert.throws(() => { gpu.gemvColumns = bad; }, /gemvColumns is .*; expected one of 1, 2, 4, 8 output columns/);
    assert.equal(gpu.gemvColumns, saved);
    await assert.rejects(WebGpuBackend.create({ gemvColumns: 5 }), (e: unknown) => e instanceof BrickworkError && e.code === 'E_OPTION' && /gemvColumns is 5/.test(e.message));
    const env = process.env.BRICKWORK_GEMV_COLUMNS;
    try {
      for (const bad of ['four', '6']) {
        process.env.BRICKWORK_GEMV_COLUMNS = bad;
        await assert.rejects(WebGpuBackend.create(), new RegExp(`BRICKWORK_GEMV_COLUMNS.*${bad}.*expected one of 1, 2, 4, 8`));
      }
      process.env.BRICKWORK_GEMV_COLUMNS = '2';
      const two = await WebGpuBackend.create();
      try { assert.equal(two.gemvColumns, 2); } finally { two.destroy(); }
    } finally {
      if (env === undefined) delete process.env.BRICKWORK_GEMV_COLUMNS; else process.env.BRICKWORK_GEMV_COLUMNS = env;
    }
    // The matmul tile's settings likewise.
    await assert.rejects(WebGpuBackend.create({ matmulTile: 96 as 64 }), /matmulTile is 96; expected one of 64, 128/);
    for (const [name, bad, want] of [['BRICKWORK_MATMUL_TILE', '256', /BRICKWORK_MATMUL_TILE is '256'; expected one of 64, 128/], ['BRICKWORK_MATMUL_STAGES', 'two', /BRICKWORK_MATMUL_STAGES is 'two'; expected one of 1, 2/]] as const) {
      const was = process.env[name];
      process.env[name] = bad;
      try {
        await assert.rejects(WebGpuBackend.create(), want);
      } finally {
        if (was === undefined) delete process.env[name]; else process.env[name] = was;
      }
    }
  });
});
