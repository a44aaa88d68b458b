// The backend conformance cases: for every op, calls on odd shapes (1, 7, 33, 257 and friends) that
// run on any backend from seeded random inputs. test/webgpu-conformance.test.ts checks them on WebGPU
// against the CPU reference; test/webgpu-shader-f16.test.ts compiles them with shader-f16.

import { ops, WebGpuBackend, type Backend, type OpName, type Tensor } from '../src/index.ts';
import { fromF32, toF32 } from '../src/tensor/dtype.ts';
import { rand } from './helpers.ts';

/** Ops × dtypes WebGPU does not run, and why (reported, not failed). */
export const SKIPS: Partial<Record<OpName, string>> = {};

/** A case's result: one tensor, or several (an op's output and the inputs it writes in place). */
export type Case = { name: string; run: (be: Backend, mk: Maker) => Tensor | Tensor[]; tol?: number };
export type Maker = {
  f: (shape: number[], scale?: number) => Tensor;
  i: (data: number[], shape: number[]) => Tensor;
  w: (shape: number[], dtype: 'f32' | 'f16' | 'bf16') => Tensor;
  /** f32 values gen(u, i) from uniform u in [0, 1) (e.g. a non-negative second moment). */
  g: (shape: number[], gen: (u: number, i: number) => number) => Tensor;
};

/** Run f with the WebGPU backend's 128-wide matmul tile (the CPU reference runs it as it is). */
function tile128(be: Backend, f: () => Tensor): Tensor {
  if (!(be instanceof WebGpuBackend)) return f();
  be.matmulTile = 128;
  try { return f(); } finally { be.matmulTile = 64; }
}

/** Run f with decode attention split over workgroups from `blocks` blocks of 256 keys (WebGPU only). */
function splitAttention(be: Backend, blocks: number, f: () => Tensor): Tensor {
  if (!(be instanceof WebGpuBackend)) return f();
  const saved = be.attentionSplit;
  be.attentionSplit = blocks;
  try { return f(); } finally { be.attentionSplit = saved; }
}

export function makers(seed: number, be: Backend): Maker {
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
    g: (shape, gen) => be.upload(Float32Array.from({ length: shape.reduce((p, d) => p * d, 1) }, (_, i) => gen(r(), i)), shape, 'f32'),
  };
}

// attention_grad without statistics (the row kernels): offsets pos0 > 0, GQA (H > K), S > T with keys no
// query sees (zero rows of dk/dv), S > 256 and D > 64.
const attentionGradPlain: Case[] = [[1, 1, 1, 1, 1, 1, [0]], [2, 7, 4, 2, 9, 12, [5, 1]], [1, 5, 6, 3, 33, 5, [0]], [2, 3, 2, 1, 8, 9, [0, 4]],
  [1, 3, 2, 2, 70, 130, [127]], [2, 1, 8, 2, 16, 300, [299, 40]]].flatMap(([B, T, H, K, D, S, pos0]) => (['q', 'k', 'v'] as const).map((wrt) => ({
  name: `${wrt} B${B} T${T} H${H} K${K} D${D} S${S} pos0 ${pos0}`,
    run: (_: Backend, m: Maker) => {
      const [b, t, h, k, d, s] = [B, T, H, K, D, S] as number[];
      return ops.attentionGrad(m.f([b, t, h, d]), m.f([b, k, s, d]), m.f([b, k, s, d]), m.f([b, t, h, d]), pos0 as number[], 1 / Math.sqrt(d), wrt);
    },
  })));

type QkvCase = { B: number; T: number; C: number; H: number; K: number; D: number; S: number; pos0: number[]; dtype: 'f32' | 'f16' | 'bf16'; norm?: 'rmsnorm' | 'layernorm'; bias?: boolean; invFreq?: number[] };
/** A fused_qkv call on random inputs: q and the two caches it writes. */
function qkv(m: Maker, c: QkvCase): Tensor[] {
  const cache = { k: m.f([c.B, c.K, c.S, c.D]), v: m.f([c.B, c.K, c.S, c.D]) };
  const q = ops.fusedQkv(cache, {
    x: m.f([c.B, c.T, c.C]), wq: m.w([c.H * c.D, c.C], c.dtype), wk: m.w([c.K * c.D, c.C], c.dtype), wv: m.w([c.K * c.D, c.C], c.dtype),
    norm: c.norm && { kind: c.norm, eps: 1e-5, w: m.f([c.C]), b: c.norm === 'layernorm' ? m.f([c.C]) : undefined },
    bias: c.bias ? { q: m.f([c.H * c.D]), k: m.f([c.K * c.D]), v: m.f([c.K * c.D]) } : undefined,
    rope: c.invFreq && { invFreq: c.invFreq, headDim: c.D },
  }, c.pos0);
  return [q, cache.k, cache.v];
}

export const CASES: Record<OpName, Case[]> = {
  matmul: [
    ...[[1, 7, 33], [7, 1, 257], [33, 257, 7], [65, 33, 70], [3, 64, 64], [8, 40, 24]].flatMap(([M, N, K]) => (['f32', 'f16', 'bf16'] as const).flatMap((dt) => [
      { name: `${M}x${N}x${K} transB ${dt}`, run: (_, m) => ops.matmul(m.f([M, K]), m.w([N, K], dt), true) },
      { name: `${M}x${N}x${K} ${dt}`, run: (_, m) => ops.matmul(m.f([M, K]), m.w([K, N], dt)) },
    ] as Case[])),
    { name: 'batched with shared b', run: (_, m) => ops.matmul(m.f([2, 3, 5, 16]), m.w([9, 16], 'f16'), true) },
    { name: 'batched b', run: (_, m) => ops.matmul(m.f([3, 7, 33]), m.f([3, 33, 5])) },
    // transA (a is (..., K, M)): weight gradients. M <= 8 with transB must not take the GEMV path.
    ...[[1, 7, 33], [7, 1, 257], [33, 257, 7], [65, 33, 70], [8, 40, 24]].flatMap(([M, N, K]) => [
      { name: `${M}x${N}x${K} transA`, run: (_, m) => ops.matmulT(m.f([K, M]), m.f([K, N]), { transA: true }) },
      { name: `${M}x${N}x${K} transA transB`, run: (_, m) => ops.matmulT(m.f([K, M]), m.f([N, K]), { transA: true, transB: true }) },
    ] as Case[]),
    { name: 'transA batched b', run: (_, m) => ops.matmulT(m.f([3, 33, 7]), m.f([3, 33, 5]), { transA: true }) },
    { name: 'transA transB batched b', run: (_, m) => ops.matmulT(m.f([2, 3, 17, 5]), m.f([2, 3, 9, 17]), { transA: true, transB: true }) },
    { name: 'transA shared b', run: (_, m) => ops.matmulT(m.f([2, 3, 17, 5]), m.f([17, 9]), { transA: true }) },
    { name: 'transA transB shared b f16', run: (_, m) => ops.matmulT(m.f([2, 3, 16, 5]), m.w([9, 16], 'f16'), { transA: true, transB: true }) },
    { name: 'transA b broadcast over the leading batch dim', run: (_, m) => ops.matmulT(m.f([2, 3, 65, 4]), m.f([3, 65, 7]), { transA: true }) },
    // The 128-wide tile kernel (WebGpuBackend.matmulTile = 128): ragged tiles, each transpose, batches.
    // The reference sums in f64; an f32 kernel's rounding error grows with K (partial sums of about √K / 3,
    // each step rounded): at K = 1028 it reached 2.5e-5 of max(1, |result|) over 16 seeds × both tiles
    // (SwiftShader), so that case gets twice that. A lost or doubled K step would be off by about 1.
    ...([[130, 260, 36, false, false], [130, 260, 36, false, true], [132, 68, 33, true, false], [132, 68, 36, true, true], [8, 4, 20, false, false], [257, 129, 1028, false, true]] as const).map(([M, N, K, tA, tB]) => ({
      name: `tile 128: ${M}x${N}x${K}${tA ? ' transA' : ''}${tB ? ' transB' : ''}`,
      run: (be: Backend, m: Maker) => tile128(be, () => ops.matmulT(m.f(tA ? [K, M] : [M, K]), m.f(tB ? [N, K] : [K, N]), { transA: tA, transB: tB })),
      tol: K > 1000 ? 5e-5 : undefined,
    })),
    { name: 'tile 128: batched, shared b', run: (be, m) => tile128(be, () => ops.matmul(m.f([2, 65, 132]), m.f([132, 20]))) },
    // 16-bit (N, K) weights in the big tile (prefill): ragged M and N, K a multiple of 8 but not of 16.
    ...(['f16', 'bf16'] as const).map((dt) => ({ name: `tile 128: 130x260x40 transB ${dt}`, run: (be: Backend, m: Maker) => tile128(be, () => ops.matmul(m.f([130, 40]), m.w([260, 40], dt), true)) })),
    { name: 'tile 128: batched, shared f16 b', run: (be, m) => tile128(be, () => ops.matmul(m.f([2, 33, 136]), m.w([70, 136], 'f16'), true)) },
    { name: 'tile 128: f16 b, K not a multiple of 8 (64-wide tile)', run: (be, m) => tile128(be, () => ops.matmul(m.f([20, 36]), m.w([12, 36], 'f16'), true)) },
    { name: 'tile 128: batched b, transA', run: (be, m) => tile128(be, () => ops.matmulT(m.f([3, 20, 132]), m.f([3, 20, 8]), { transA: true })) },
    // GEMV (at most 8 rows, transB) over K a multiple of 64 loads: every thread takes the same number of steps.
    ...(['f32', 'f16', 'bf16'] as const).map((dt) => ({ name: `2x5x512 transB ${dt} (GEMV, even steps)`, run: (_: Backend, m: Maker) => ops.matmul(m.f([2, 512]), m.w([5, 512], dt), true) })),
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
  index_add_rows: [{ name: 'repeated rows', run: (_, m) => ops.indexAddRows(m.f([7, 33]), m.f([4, 33]), m.i([6, 0, 6, 2], [4])) },
    // An embedding-gradient shape: many rows in ragged chunks of 3, two column groups, repeats across chunks.
    { name: 'chunked rows', run: (_, m) => ops.indexAddRows(m.f([1100, 70]), m.f([300, 70]), m.i(Array.from({ length: 300 }, (_, i) => (i * 37) % 1099 + (i % 7 === 0 ? 1 : 0)), [300])) }],
  topk: [{ name: '7x33 k3', run: (_, m) => ops.topk(m.f([7, 33]), 3) }, { name: 'ties', run: (be) => ops.topk(be.upload(Float32Array.from([1, 3, 3, 0, 3]), [1, 5], 'f32'), 4) },
    // k = 1 is a workgroup reduction (greedy decoding): ties across threads must still give the lowest index.
    { name: 'argmax 3x1000', run: (_, m) => ops.topk(m.f([3, 1000]), 1) },
    // Row 0: maxima at 7 and 300; row 1: at 263 (thread 7) and 10 (thread 10), so the lower thread holds the higher index.
    { name: 'argmax ties across threads', run: (be) => ops.topk(be.upload(Float32Array.from({ length: 2 * 600 }, (_, i) => ([7, 300, 600 + 263, 600 + 10].includes(i) ? 5 : 1)), [2, 600], 'f32'), 1) },
    // Maxima at 258 (thread 2), 2 and 1: neighbouring threads, one subgroup on any device.
    { name: 'argmax ties within a subgroup', run: (be) => ops.topk(be.upload(Float32Array.from({ length: 300 }, (_, i) => ([258, 2, 1].includes(i) ? 4 : 0)), [1, 300], 'f32'), 1) },
    { name: 'argmax of a row shorter than the workgroup', run: (be) => ops.topk(be.upload(Float32Array.from([-1e30, -2e30, -1e30]), [1, 3], 'f32'), 1) }],
  // One draw per row, by that row's uniform; ids must match the CPU's exactly (a draw within f32 rounding
  // of a boundary could differ, which these seeded inputs avoid). Ties at the cuts, −∞ and ±0 included.
  sample: [
    { name: 'temperature 16x1000', run: (_, m) => ops.sample(m.f([16, 1000], 4), m.g([16], (u) => u), { temperature: 0.8, topK: 0, topP: 1 }) },
    { name: 'top-k 50 16x1000', run: (_, m) => ops.sample(m.f([16, 1000], 4), m.g([16], (u) => u), { temperature: 0.7, topK: 50, topP: 1 }) },
    { name: 'top-p 0.9 16x3001', run: (_, m) => ops.sample(m.f([16, 3001], 6), m.g([16], (u) => u), { temperature: 1, topK: 0, topP: 0.9 }) },
    { name: 'top-k 40 top-p 0.8 9x777', run: (_, m) => ops.sample(m.f([9, 777], 5), m.g([9], (u) => u), { temperature: 1.3, topK: 40, topP: 0.8 }) },
    { name: 'k 1 and k V-1', run: (_, m) => ops.sample(m.f([4, 7], 2), m.g([4], (u) => u), { temperature: 1, topK: 6, topP: 1 }) },
    { name: 'ties at both cuts', run: (_, m) => ops.sample(m.g([12, 600], (u) => Math.round(u * 6) / 2), m.g([12], (u) => u), { temperature: 1, topK: 90, topP: 0.6 }) },
    { name: 'ties, top-p alone', run: (_, m) => ops.sample(m.g([12, 600], (u) => Math.round(u * 4)), m.g([12], (u) => u), { temperature: 0.5, topK: 0, topP: 0.3 }) },
    // The cuts inside a tied group below the top one: what the groups above weigh decides how many ties
    // stay. (Values whose f32 bits do not end in zeros, so that every pass of the key search picks a digit.)
    { name: 'ties, top-k cut below the top group', run: (_, m) => ops.sample(m.g([12, 600], (u) => Math.round(u * 6) / 2 + 0.3), m.g([12], (u) => u), { temperature: 1, topK: 90, topP: 1 }) },
    { name: 'ties, top-p cut below the top group', run: (_, m) => ops.sample(m.g([12, 600], (u) => Math.round(u * 4) * 0.7 + 0.1), m.g([12], (u) => u), { temperature: 0.5, topK: 0, topP: 0.9 }) },
    { name: '-inf and -0', run: (be, m) => ops.sample(be.upload(Float32Array.from({ length: 8 * 300 }, (_, i) => (i % 3 === 0 ? -Infinity : i % 7 === 0 ? -0 : i % 5 === 0 ? 0 : (i % 11) / 4 - 2)), [8, 300], 'f32'), m.g([8], (u) => u), { temperature: 1, topK: 30, topP: 0.95 }) },
    { name: 'u near 0 and 1', run: (be, m) => ops.sample(m.f([4, 500], 3), be.upload(Float32Array.from([0, 0.9999999, 1e-9, 0.5]), [4], 'f32'), { temperature: 1, topK: 0, topP: 0.7 }) },
  ],
  // Target logits p and draft logits q (q = p + noise, so that drafts are accepted and rejected), drafts
  // drawn from q by the sample op, two uniforms per row; decisions and tokens must match exactly.
  accept_draft: [
    ...([['temperature 16x1000', 16, 1000, 3, { temperature: 0.9, topK: 0, topP: 1 }], ['top-k 50 16x1000', 16, 1000, 1, { temperature: 1, topK: 50, topP: 1 }],
      ['top-p 0.9 12x3001', 12, 3001, 2, { temperature: 1, topK: 0, topP: 0.9 }], ['top-k 40 top-p 0.8 9x777', 9, 777, 3, { temperature: 1.3, topK: 40, topP: 0.8 }],
      ['k 1 (draft = target argmax or not)', 6, 300, 1, { temperature: 1, topK: 1, topP: 1 }]] as const).map(([name, N, V, noise, a]) => ({
      name,
      run: (_: Backend, m: Maker) => {
        const p = m.f([N, V], 4), q = ops.add(p, m.f([N, V], noise));
        return ops.acceptDraft(p, q, ops.sample(q, m.g([N], (u) => u), a), m.g([N, 2], (u) => u), a);
      },
    })),
    // The same logits: every draft is accepted.
    { name: 'draft = target', run: (_, m) => { const p = m.f([5, 400], 3); return ops.acceptDraft(p, p, ops.sample(p, m.g([5], (u) => u), { temperature: 1, topK: 20, topP: 1 }), m.g([5, 2], (u) => u), { temperature: 1, topK: 20, topP: 1 }); } },
    // Drafts outside q's top-k (q(d) = 0): always rejected; −∞ logits (never drawn) and ties.
    { name: 'drafts the draft would not draw, -inf, ties', run: (be, m) => {
      const a = { temperature: 0.7, topK: 30, topP: 0.95 };
      const L = (s: number) => be.upload(Float32Array.from({ length: 6 * 300 }, (_, i) => (i % 3 === 0 ? -Infinity : Math.round(((i * s) % 17) / 2) / 3)), [6, 300], 'f32');
      return ops.acceptDraft(L(7), L(5), m.i([0, 1, 2, 299, 150, 4], [6]), m.g([6, 2], (u) => u), a);
    } },
  ],
  gather: [{ name: '7x33', run: (_, m) => ops.gather(m.f([7, 33]), m.i(Array.from({ length: 14 }, (_, i) => (i * 5) % 33), [7, 2])) }],
  kv_write: [{ name: 'two rows', run: (_, m) => ops.kvWrite(m.f([2, 3, 9, 8]), m.f([2, 4, 3, 8]), [5, 0]) }],
  attention: [
    // T >= 16 takes the tiled kernel: D a multiple of the tile or not, GQA, blocks cut short by T. T < 16
    // takes the row kernel: key rows in vec4 loads where D % 4 == 0 (D 64, 12), else one float at a time;
    // blocks of 256 keys (S 300, 530, 777), and each lane summing 1 to 4 of the head's dims (D 12, 20, 70, 130, 256).
    ...[[1, 1, 1, 1, 1, 1], [2, 7, 4, 2, 33, 9], [1, 33, 6, 1, 8, 40], [1, 3, 2, 2, 130, 70], [2, 1, 8, 2, 64, 300],
      [2, 37, 4, 2, 64, 45], [1, 16, 2, 1, 24, 16], [1, 20, 3, 3, 100, 25], [2, 5, 4, 2, 12, 70],
      [1, 2, 4, 1, 256, 530], [1, 4, 6, 2, 20, 777]].map(([B, T, H, K, D, S]) => ({
      name: `B${B} T${T} H${H} K${K} D${D} S${S}`,
      run: (_: Backend, m: Maker) => ops.attention(m.f([B, T, H, D]), m.f([B, K, S, D]), m.f([B, K, S, D]), Array.from({ length: B }, (_, b) => Math.max(0, S - T - b)), 1 / Math.sqrt(D)),
    })),
    // Long contexts split the blocks over workgroups and join them in a second dispatch (by default from 4
    // blocks: S 777 above); here from 2, with unsplit runs for contrast, and a batch whose second row
    // sees one block of the three (its other two workgroups have no keys).
    ...([[2, 1, 8, 2, 64, 300, [299, 298], 2], [1, 2, 4, 1, 256, 530, [528], 2], [1, 4, 6, 2, 20, 777, [773], 0],
      [2, 3, 4, 2, 32, 720, [717, 5], 2], [1, 1, 3, 1, 13, 600, [599], 2]] as const).map(([B, T, H, K, D, S, pos0, blocks]) => ({
      name: `B${B} T${T} H${H} K${K} D${D} S${S} pos0 ${pos0.join(',')}, ${blocks ? `split from ${blocks} blocks` : 'unsplit'}`,
      run: (be: Backend, m: Maker) => splitAttention(be, blocks, () => ops.attention(m.f([B, T, H, D]), m.f([B, K, S, D]), m.f([B, K, S, D]), [...pos0], 1 / Math.sqrt(D))),
    })),
  ],
  attention_probs: [{ name: 'B2 T5', run: (_, m) => ops.attentionProbs(m.f([2, 5, 4, 8]), m.f([2, 2, 9, 8]), [4, 1], 0.35) }],
  permute: [
    { name: '(2,3,5,7) swap middle', run: (_, m) => ops.permute(m.f([2, 3, 5, 7]), [0, 2, 1, 3]) },
    { name: '7x33 transpose', run: (_, m) => ops.permute(m.f([7, 33]), [1, 0]) },
    { name: '5-d', run: (_, m) => ops.permute(m.f([2, 1, 3, 4, 5]), [4, 2, 0, 3, 1]) },
    { name: '1-d', run: (_, m) => ops.permute(m.f([257]), [0]) },
  ],
  sum_to: [
    { name: '(3,7,33) to (33)', run: (_, m) => ops.sumTo(m.f([3, 7, 33]), [33]) },
    { name: '(3,7,33) to (3,1,33)', run: (_, m) => ops.sumTo(m.f([3, 7, 33]), [3, 1, 33]) },
    { name: '(3,7,33) to (7,1)', run: (_, m) => ops.sumTo(m.f([3, 7, 33]), [7, 1]) },
    { name: '(2,3,5,7) to (1,3,1,7)', run: (_, m) => ops.sumTo(m.f([2, 3, 5, 7]), [1, 3, 1, 7]) },
    { name: 'to one element', run: (_, m) => ops.sumTo(m.f([7, 257]), [1]) },
    { name: 'unchanged', run: (_, m) => ops.sumTo(m.f([7, 33]), [7, 33]) },
    { name: 'size-1 axes between', run: (_, m) => ops.sumTo(m.f([2, 1, 5, 1, 3]), [5, 1, 1]) },
    // Long sums into few outputs: one workgroup per output.
    { name: 'to a scalar', run: (_, m) => ops.sumTo(m.f([3, 7, 257]), []) },
    { name: '(300,5) to (5)', run: (_, m) => ops.sumTo(m.f([300, 5]), [5]) },
    { name: '(2,300,3) to (2,1,3)', run: (_, m) => ops.sumTo(m.f([2, 300, 3]), [2, 1, 3]) },
    { name: '(33,4,9,2) to (4,1,2)', run: (_, m) => ops.sumTo(m.f([33, 4, 9, 2]), [4, 1, 2]) },
  ],
  slice: [
    { name: 'last axis', run: (_, m) => ops.slice(m.f([7, 33]), 1, 5, 30) },
    { name: 'middle axis', run: (_, m) => ops.slice(m.f([2, 9, 3, 5]), 1, 2, 9) },
    { name: 'first axis', run: (_, m) => ops.slice(m.f([7, 33]), 0, 3, 7) },
    { name: 'one element', run: (_, m) => ops.slice(m.f([257]), 0, 256, 257) },
  ],
  concat: [
    { name: 'last axis', run: (_, m) => ops.concat(m.f([7, 33]), m.f([7, 5]), 1) },
    { name: 'middle axis', run: (_, m) => ops.concat(m.f([2, 3, 3, 5]), m.f([2, 9, 3, 5]), 1) },
    { name: 'first axis', run: (_, m) => ops.concat(m.f([1, 257]), m.f([3, 257]), 0) },
    { name: 'i32 ids', run: (_, m) => ops.concat(m.i([7, 1, 42], [1, 3]), m.i([-5, 2147483647], [1, 2]), 1) },
  ],
  pad: [
    { name: 'last axis', run: (_, m) => ops.pad(m.f([7, 25]), 1, 5, 3) },
    { name: 'middle axis', run: (_, m) => ops.pad(m.f([2, 7, 3, 5]), 1, 2, 0) },
    { name: 'first axis', run: (_, m) => ops.pad(m.f([4, 33]), 0, 0, 3) },
  ],
  act_grad: (['silu', 'relu', 'gelu_erf', 'gelu_tanh'] as const).map((fn) => ({ name: fn, run: (_: Backend, m: Maker) => ops.actGrad(m.f([257], 8), m.f([257]), fn) })),
  norm_grad: [
    { name: 'rmsnorm 7x33', run: (_, m) => ops.normGrad(m.f([7, 33]), m.f([33]), m.f([7, 33]), 'rmsnorm', 1e-5) },
    { name: 'rmsnorm 1x257', run: (_, m) => ops.normGrad(m.f([1, 257], 3), m.f([257]), m.f([1, 257]), 'rmsnorm', 1e-6) },
    { name: 'layernorm 7x33', run: (_, m) => ops.normGrad(m.f([7, 33]), m.f([33]), m.f([7, 33]), 'layernorm', 1e-5) },
    { name: 'layernorm 2x3x257', run: (_, m) => ops.normGrad(m.f([2, 3, 257], 2), m.f([257]), m.f([2, 3, 257]), 'layernorm', 1e-5) },
  ],
  // With the rows' statistics the gradients are tiled (key blocks for k and v); the CPU ignores them.
  ...(() => {
    const shapes = [[1, 1, 1, 1, 1, 1, [0]], [2, 7, 4, 2, 9, 12, [5, 1]], [1, 5, 6, 3, 33, 5, [0]], [1, 3, 2, 2, 70, 130, [127]],
      [2, 1, 8, 2, 16, 300, [299, 40]], [2, 37, 4, 2, 64, 45, [8, 0]], [1, 20, 3, 3, 100, 25, [5]]] as const;
    const withStats = (wrt: 'q' | 'k' | 'v' | 'stats') => shapes.map(([B, T, H, K, D, S, pos0]) => ({
      name: `${wrt} B${B} T${T} H${H} K${K} D${D} S${S} pos0 ${pos0}`,
      run: (_: Backend, m: Maker) => {
        const [q, k, v, g] = [m.f([B, T, H, D]), m.f([B, K, S, D]), m.f([B, K, S, D]), m.f([B, T, H, D])];
        const y = ops.attention(q, k, v, [...pos0], 1 / Math.sqrt(D));
        const st = ops.attentionStats(q, k, y, g, [...pos0], 1 / Math.sqrt(D));
        return wrt === 'stats' ? st : ops.attentionGrad(q, k, v, g, [...pos0], 1 / Math.sqrt(D), wrt, st);
      },
    }));
    return { attention_stats: withStats('stats'), attention_grad: [...attentionGradPlain, ...(['q', 'k', 'v'] as const).flatMap(withStats)] };
  })(),
  kv_read: [{ name: 'two rows', run: (_, m) => ops.kvRead(m.f([2, 3, 9, 8]), [5, 0], 4) }, { name: 'one', run: (_, m) => ops.kvRead(m.f([1, 1, 1, 1]), [0], 1) }],
  scatter_add: [
    { name: 'top-3 of 33, repeats', run: (_, m) => ops.scatterAdd(m.f([7, 3]), m.i(Array.from({ length: 21 }, (_, i) => (i * 7) % 33 % (i % 4 === 0 ? 2 : 33)), [7, 3]), 33) },
    { name: '3-d', run: (_, m) => ops.scatterAdd(m.f([2, 5, 2]), m.i(Array.from({ length: 20 }, (_, i) => (i * 3) % 7), [2, 5, 2]), 7) },
  ],
  cross_entropy: [
    { name: '7x33 with ignored rows', run: (_, m) => ops.crossEntropy(m.f([7, 33], 5), m.i([0, -1, 32, 5, 5, -100, 17], [7])) },
    { name: '2x1000', run: (_, m) => ops.crossEntropy(m.f([2, 1000], 8), m.i([999, 3], [2])) },
    { name: '1x1', run: (_, m) => ops.crossEntropy(m.f([1, 1]), m.i([0], [1])) },
  ],
  cross_entropy_grad: [
    { name: '7x33 with ignored rows', run: (_, m) => ops.crossEntropyGrad(m.f([7, 33], 5), m.i([0, -1, 32, 5, 5, -100, 17], [7]), m.f([7])) },
    { name: '2x1000', run: (_, m) => ops.crossEntropyGrad(m.f([2, 1000], 8), m.i([999, 3], [2]), m.f([2], 3)) },
  ],
  adam_moments: [
    { name: '257', run: (_, m) => ops.adamMoments(m.g([2, 257], (u, i) => (i < 257 ? u * 2 - 1 : u)), m.f([257], 3), { beta1: 0.9, beta2: 0.999, gradScale: 0.5 }) },
    { name: '7x33 gradient', run: (_, m) => ops.adamMoments(m.g([2, 231], (u, i) => (i < 231 ? u * 2 - 1 : u)), m.f([7, 33]), { beta1: 0.8, beta2: 0.95, gradScale: 1 }) },
  ],
  adam_apply: [
    { name: '7x33', run: (_, m) => ops.adamApply(m.f([7, 33]), m.g([2, 231], (u, i) => (i < 231 ? u * 2 - 1 : 0.01 + u)), { lr: 1e-3, eps: 1e-8, weightDecay: 0.1, bc1: 1 - 0.9 ** 3, bc2: 1 - 0.999 ** 3 }) },
    { name: '257, no decay', run: (_, m) => ops.adamApply(m.f([257], 4), m.g([2, 257], (u, i) => (i < 257 ? (u * 2 - 1) * 0.1 : 1e-4 * u)), { lr: 0.05, eps: 1e-6, weightDecay: 0, bc1: 0.1, bc2: 0.001 }) },
  ],
  // Each case against the CPU reference, which composes the primitives; rows > 8 run in chunks, K not a
  // multiple of the load width takes the scalar path, R < D/2 is partial rotary (pass-through columns).
  fused_linear: [
    { name: 'rmsnorm + rope, f16, vector path', run: (_, m) => ops.fusedLinear({ x: m.f([2, 3, 24]), w: m.w([16, 24], 'f16'), norm: { kind: 'rmsnorm', eps: 1e-5, w: m.f([24]) }, rope: { pos0: [5, 900], invFreq: [1, 0.3, 0.05, 0.001], headDim: 8 } }) },
    { name: 'partial rope + bias, f32, scalar path', run: (_, m) => ops.fusedLinear({ x: m.f([1, 2, 7]), w: m.w([12, 7], 'f32'), bias: m.f([12]), rope: { pos0: [3], invFreq: [1, 0.2], headDim: 6 } }) },
    { name: 'layernorm + scale + bias + gelu_tanh, bf16, 11 rows', run: (_, m) => ops.fusedLinear({ x: m.f([11, 16], 3), w: m.w([33, 16], 'bf16'), norm: { kind: 'layernorm', eps: 1e-5, w: m.f([16]), b: m.f([16]), scale: 0.5 }, bias: m.f([33]), act: 'gelu_tanh' }) },
    { name: 'GLU silu with rmsnorm, f16', run: (_, m) => ops.fusedLinear({ x: m.f([1, 1, 32]), w: m.w([19, 32], 'f16'), up: { w: m.w([19, 32], 'f16') }, norm: { kind: 'rmsnorm', eps: 1e-6, w: m.f([32]) }, act: 'silu' }) },
    { name: 'GLU gelu_erf with biases, f32', run: (_, m) => ops.fusedLinear({ x: m.f([3, 12]), w: m.w([9, 12], 'f32'), up: { w: m.w([9, 12], 'f32'), bias: m.f([9]) }, bias: m.f([9]), act: 'gelu_erf' }) },
    { name: 'bias + residual, f32, scalar path, 9 rows', run: (_, m) => ops.fusedLinear({ x: m.f([9, 33]), w: m.w([7, 33], 'f32'), bias: m.f([7]), residual: m.f([9, 7]) }) },
    { name: 'layernorm without bias + residual, bf16 scalar path', run: (_, m) => ops.fusedLinear({ x: m.f([2, 12]), w: m.w([5, 12], 'bf16'), norm: { kind: 'layernorm', eps: 1e-5, w: m.f([12]) }, residual: m.f([2, 5]) }) },
    { name: 'relu, bf16, one row', run: (_, m) => ops.fusedLinear({ x: m.f([1, 8]), w: m.w([3, 8], 'bf16'), act: 'relu' }) },
    { name: 'GLU silu, f16 scalar path, 3 rows', run: (_, m) => ops.fusedLinear({ x: m.f([3, 12]), w: m.w([5, 12], 'f16'), up: { w: m.w([5, 12], 'f16') }, act: 'silu' }) },
    // K a multiple of 64 loads (512 halves, 256 floats): every thread takes the same number of steps.
    { name: 'GLU silu with rmsnorm, f16, K 512, two rows', run: (_, m) => ops.fusedLinear({ x: m.f([2, 512]), w: m.w([6, 512], 'f16'), up: { w: m.w([6, 512], 'f16') }, norm: { kind: 'rmsnorm', eps: 1e-6, w: m.f([512]) }, act: 'silu' }) },
    { name: 'layernorm + residual, f32, K 256', run: (_, m) => ops.fusedLinear({ x: m.f([1, 256]), w: m.w([5, 256], 'f32'), norm: { kind: 'layernorm', eps: 1e-5, w: m.f([256]), b: m.f([256]) }, residual: m.f([1, 5]) }) },
  ],
  // The whole cache comes back: rows outside the written positions must be untouched.
  fused_kv_write: [
    { name: 'rmsnorm + rope, f16, GQA, two batch rows', run: (_, m) => ops.fusedKvWrite(m.f([2, 2, 9, 8]), { x: m.f([2, 3, 24]), w: m.w([16, 24], 'f16'), norm: { kind: 'rmsnorm', eps: 1e-5, w: m.f([24]) }, rope: { pos0: [5, 1], invFreq: [1, 0.3, 0.05, 0.001], headDim: 8 } }, [5, 1]) },
    { name: 'bias only, bf16, scalar path', run: (_, m) => ops.fusedKvWrite(m.f([1, 3, 4, 2]), { x: m.f([1, 1, 7]), w: m.w([6, 7], 'bf16'), bias: m.f([6]) }, [2]) },
    { name: 'rmsnorm, f16, scalar path', run: (_, m) => ops.fusedKvWrite(m.f([1, 2, 4, 3]), { x: m.f([1, 1, 10]), w: m.w([6, 10], 'f16'), norm: { kind: 'rmsnorm', eps: 1e-5, w: m.f([10]) } }, [1]) },
    { name: 'layernorm + partial rope, f32, 11 rows', run: (_, m) => ops.fusedKvWrite(m.f([1, 2, 12, 6]), { x: m.f([1, 11, 16]), w: m.w([12, 16], 'f32'), norm: { kind: 'layernorm', eps: 1e-5, w: m.f([16]), b: m.f([16]) }, rope: { pos0: [1], invFreq: [1, 0.1], headDim: 6 } }, [1]) },
  ],
  // q, and both whole caches (rows outside the written positions untouched).
  fused_qkv: [
    { name: 'rmsnorm + rope, f16, GQA, two batch rows', run: (_, m) => qkv(m, { B: 2, T: 3, C: 24, H: 4, K: 2, D: 8, S: 9, pos0: [5, 1], dtype: 'f16', norm: 'rmsnorm', invFreq: [1, 0.3, 0.05, 0.001] }) },
    { name: 'biases, bf16, scalar path, one row', run: (_, m) => qkv(m, { B: 1, T: 1, C: 7, H: 3, K: 3, D: 2, S: 4, pos0: [2], dtype: 'bf16', bias: true }) },
    { name: 'rmsnorm + rope, f16, scalar path, two rows', run: (_, m) => qkv(m, { B: 1, T: 2, C: 12, H: 2, K: 1, D: 4, S: 5, pos0: [1], dtype: 'f16', norm: 'rmsnorm', invFreq: [1, 0.1] }) },
    { name: 'layernorm + bias + partial rope, f32, 11 rows', run: (_, m) => qkv(m, { B: 1, T: 11, C: 16, H: 2, K: 1, D: 6, S: 12, pos0: [1], dtype: 'f32', norm: 'layernorm', bias: true, invFreq: [1, 0.1] }) },
  ],
};

