// Where the GPU time goes, kernel by kernel: times every dispatch with timestamp queries
// (WebGpuBackend.startProfile) for a 512-token prefill and a few fused decode steps of random-weight
// Llama-shaped models in f16, and for one training step of a GPT-2-small-shaped model (fp32), and
// prints the kernels that take the most GPU time. Each dispatch runs in a pass of its own while
// profiling, so totals run a little above an unprofiled pass; the shares are what to read.
//   node --import ./scripts/ts.mjs bench/profile.ts [--models tiny,125M,1B] [--train] [--top N] [--small]
// --small shrinks every shape (for a check on an emulated GPU: the numbers then mean nothing).

import { writeFileSync } from 'node:fs';
import { AdamW, WebGpuBackend, gradients, llamaSpec, randomModel, type Model, type ModelSpec, type ProfileEntry } from '../src/index.ts';

const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const small = args.includes('--small');
const top = Number(arg('--top', '15'));
const models = arg('--models', small ? 'tiny' : 'tiny,125M,1B').split(',').filter(Boolean);
const train = args.includes('--train');
const be = await WebGpuBackend.create();
console.log(`adapter: ${be.info.vendor} ${be.info.architecture} ${be.info.description}`.trim());

const SHAPES: Record<string, Parameters<typeof llamaSpec>[0]> = {
  tiny: { vocab: 4096, width: 256, layers: 8, heads: 8, kvHeads: 4, ffn: 688 },
  '125M': { vocab: 32000, width: 768, layers: 12, heads: 12, ffn: 2048 },
  '1B': { vocab: 32000, width: 2048, layers: 16, heads: 32, kvHeads: 8, ffn: 8192 },
};
const report: Record<string, { wallMs: number; gpuMs: number; kernels: ProfileEntry[] }> = {};

function print(title: string, wallMs: number, entries: ProfileEntry[]): void {
  const gpu = entries.reduce((s, e) => s + e.ms, 0);
  report[title] = { wallMs, gpuMs: gpu, kernels: entries };
  console.log(`\n${title}: ${wallMs.toFixed(2)} ms wall, ${gpu.toFixed(2)} ms of GPU time in ${entries.reduce((s, e) => s + e.count, 0)} dispatches`);
  // GB/s: the bytes each dispatch binds ÷ its time; for GEMVs and elementwise kernels their bandwidth.
  console.log('| kernel (op, variant, input shapes) | dispatches | GPU ms | share | µs each | MB bound | GB/s |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const e of entries.slice(0, top)) {
    const gbs = e.ms > 0 ? (e.count * e.bytes) / (e.ms * 1e6) : 0;
    console.log(`| ${e.label} | ${e.count} | ${e.ms.toFixed(3)} | ${(100 * e.ms / gpu).toFixed(1)}% | ${(1000 * e.ms / e.count).toFixed(1)} | ${(e.bytes / 1e6).toFixed(2)} | ${gbs.toFixed(0)} |`);
  }
}

/** Profiles `f` once, after one unprofiled warm-up run (pipelines compiled, buffers pooled). */
async function profile(title: string, f: () => Promise<void>): Promise<void> {
  await f();
  await be.sync();
  be.startProfile();
  const t0 = performance.now();
  await f();
  await be.sync();
  const wall = performance.now() - t0;
  print(title, wall, await be.stopProfile());
}

for (const name of models) {
  const dims = SHAPES[name];
  if (!dims) throw new Error(`unknown model '${name}': expected one of ${Object.keys(SHAPES).join(', ')}`);
  const shape = small ? { ...dims, vocab: 512, width: 64, heads: 4, kvHeads: 2, ffn: 128 } : dims;
  const model: Model = randomModel(llamaSpec({ ...shape, context: 2048 }), be, { seed: 1, dtype: 'f16' });
  const V = model.spec.vocabSize;
  const P = small ? 64 : 512;
  const long = Int32Array.from({ length: P }, (_, i) => (i * 104729 + 7) % V);
  await profile(`${name} prefill, ${P} tokens`, async () => {
    const { logits } = await model.forward(long, 1, P, { logitRows: [P - 1] });
    await logits.toF32();
    logits.dispose();
  });
  const steps = 8;
  await profile(`${name} decode, ${steps} fused steps after a 32-token prompt`, async () => {
    const cache = model.newCache(1, 64);
    const prompt = long.subarray(0, 32);
    (await model.forward(prompt, 1, 32, { cache, logitRows: [31] })).logits.dispose();
    await be.sync();
    for (let i = 0; i < steps; i++) {
      const { logits } = await model.forward(Int32Array.from([5 + i]), 1, 1, { cache, pos0: [32 + i], logitRows: [0] });
      await logits.toF32();
      logits.dispose();
    }
    cache.dispose();
  });
  for (const w of model.weights.values()) w.dispose();
}

if (train) {
  const C = small ? 64 : 768, L = small ? 2 : 12, H = small ? 4 : 12, V = small ? 512 : 50257, T = small ? 64 : 1024, B = small ? 2 : 4;
  const spec: ModelSpec = {
    format: 'brickwork.spec', version: 1, family: 'gpt2', vocabSize: V, dModel: C, maxContext: T,
    norm: { kind: 'layernorm', eps: 1e-5, bias: true }, learnedPositions: true, tiedEmbeddings: true, finalNorm: true,
    layers: Array.from({ length: L }, () => ({
      wiring: 'serial' as const, norm: 'pre' as const, sublayers: [
        { kind: 'attn' as const, heads: H, kvHeads: H, headDim: C / H, qkvBias: true, outBias: true, rope: false },
        { kind: 'ffn' as const, hidden: 4 * C, gated: false, activation: 'gelu_tanh' as const, bias: true },
      ],
    })),
  };
  const model = randomModel(spec, be, { seed: 1 });
  const opt = new AdamW(model, { lr: 1e-4, weightDecay: 0.1, clip: 1 });
  const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7919 + 3) % V);
  const targets = Int32Array.from({ length: B * T }, (_, i) => (i * 104729 + 5) % V);
  await profile(`GPT-2-shaped training step (C ${C}, L ${L}, B ${B} × T ${T}, fp32)`, async () => {
    const { grads } = await gradients(model, { ids, targets, B, T });
    await opt.step(grads);
  });
}

if (process.env.OUT) writeFileSync(`${process.env.OUT}/profile.json`, JSON.stringify({ adapter: be.info, report }, null, 2));
be.destroy();
process.exit(0);
