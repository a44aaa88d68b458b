// f16 tensors bound as WGSL f16 (the adapter's shader-f16): which kernels take them so, and that every
// shader still compiles. No adapter on a CPU-only machine offers shader-f16, so the compile check runs on
// Dawn's null backend, which offers it and validates every shader but executes nothing: no values are
// compared here (test/webgpu-conformance.test.ts compares them on any adapter that has shader-f16).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WGSL_KERNELS, type KernelEnv } from '../src/backends/webgpu/kernels.ts';
import { BrickworkError, OP_NAMES, type DType } from '../src/index.ts';
import { CASES, makers, SKIPS } from './conformance-cases.ts';
import { gpu } from './gpu-helpers.ts';

// Read when the first device is made (this file runs in a process of its own), so gpu() is Dawn's null backend.
process.env.BRICKWORK_DAWN_FLAGS = 'backend=null';

const env = (shaderF16: boolean): KernelEnv => ({
  features: new Set(shaderF16 ? ['shader-f16'] : []), matmulTile: 64, matmulStages: 1, subgroups: false, attentionSplit: 4, gemvColumns: 1, shaderF16,
  maxWorkgroupStorage: 16384, maxInvocations: 256,
});
const input = (shape: number[], dtype: DType = 'f32') => ({ shape, dtype });

test('shader-f16: f16 weights bind as WGSL f16 in every kernel that reads them; bf16 stays in u32 pairs', () => {
  const tile128 = { ...env(true), matmulTile: 128 as const };
  const plans = (dt: DType, on: boolean) => {
    const e = env(on);
    const mm = (M: number, N: number, K: number, en: KernelEnv = e) => WGSL_KERNELS.matmul.plan([input([M, K]), input([N, K], dt)], { transB: true }, [M, N], en);
    return {
      'GEMV, 8 halves a load': mm(2, 5, 64),
      'GEMV, one half a load': mm(2, 5, 60),
      'tiled matmul': mm(40, 24, 64),
      'tile 128': mm(130, 136, 64, on ? tile128 : { ...e, matmulTile: 128 }),
      gather_rows: WGSL_KERNELS.gather_rows.plan([input([40, 64], dt), input([3], 'i32')], {}, [3, 64], e),
      fused_linear: WGSL_KERNELS.fused_linear.plan([input([1, 64]), input([24, 64], dt), input([64])],
        { norm: { kind: 'rmsnorm', eps: 1e-5, scale: 1, bias: false }, bias: false, act: 'silu', glu: false, residual: false }, [1, 24], e),
    };
  };
  for (const [name, p] of Object.entries(plans('f16', true))) {
    const code = p.wgsl();
    assert.match(p.key, /f16n/, `${name}: key ${p.key}`);
    assert.match(code, /array<(mat2x4<f16>|f16)>/, `${name}: f16 binding`);
    assert.doesNotMatch(code, /unpack2x16float/, `${name}: no unpacking`);
  }
  for (const [dt, on] of [['f16', false], ['bf16', true], ['bf16', false]] as const) {
    for (const [name, p] of Object.entries(plans(dt, on))) {
      assert.doesNotMatch(p.key, /f16n/, `${name} ${dt} shader-f16 ${on}: key ${p.key}`);
      assert.doesNotMatch(p.wgsl(), /f16>/, `${name} ${dt} shader-f16 ${on}: u32 pairs`);
    }
  }
});

for (const op of OP_NAMES) {
  test(`shader-f16: every ${op} kernel compiles with f16 enabled (Dawn's null backend)`, async (t) => {
    if (SKIPS[op]) return t.skip(SKIPS[op]);
    const be = await gpu();
    if (typeof be === 'string') return t.skip(be);
    if (!be.shaderF16Available) return t.skip(`this Dawn's null backend does not offer shader-f16`);
    assert.equal(be.useShaderF16, true, 'on by default where the adapter offers it');
    // Both matmul tiles, the reductions with and without subgroup operations, and the GEMV-style kernels
    // with one and four output columns per workgroup, each with each.
    const columns0 = be.gemvColumns;
    for (const [matmulTile, sub, columns] of [[64, true, 1], [128, true, 4], [64, false, 4], [128, false, 1]] as const) {
      if (sub && !be.subgroupsAvailable) continue;
      be.matmulTile = matmulTile;
      be.useSubgroups = sub;
      be.gemvColumns = columns;
      for (const [ci, c] of CASES[op].entries()) {
        let results;
        try {
          results = [c.run(be, makers(100 + ci, be))].flat();
        } catch (e) {
          // The null adapter allows 8 storage buffers per shader: the widest fused cases do not fit it.
          if (e instanceof BrickworkError && e.code === 'E_BINDINGS') { t.diagnostic(`${op} ${c.name}: ${e.message.split('\n')[0]}`); continue; }
          throw e;
        }
        // A shader that does not compile is a validation error, raised at the next read.
        for (const r of results) await assert.doesNotReject(r.toF32(), `${op} ${c.name}, tile ${matmulTile}${sub ? ', subgroups' : ''}, ${columns} GEMV columns`);
      }
    }
    be.matmulTile = 64;
    be.useSubgroups = be.subgroupsAvailable;
    be.gemvColumns = columns0;
  });
}
