// Where a decode step's time goes on WebGPU: recording the ops (JS + Dawn calls), waiting for the GPU,
// and reading the logits back, for a random-weight Llama-shaped model (default ~125M, f16).
//   node --import tsx bench/decode-breakdown.ts [--1b]

import { WebGpuBackend, llamaSpec, randomModel } from '../src/index.ts';

const big = process.argv.includes('--1b');
const be = await WebGpuBackend.create();
const dims = big ? { vocab: 32000, width: 2048, layers: 16, heads: 32, kvHeads: 8, ffn: 8192 } : { vocab: 32000, width: 768, layers: 12, heads: 12, ffn: 2048 };
const model = randomModel(llamaSpec({ ...dims, context: 2048 }), be, { seed: 1, dtype: 'f16' });
const cache = model.newCache(1, 512);
const prompt = Int32Array.from({ length: 32 }, (_, i) => i * 7 + 1);
await (await model.forward(prompt, 1, 32, { cache, logitRows: [31] })).logits.toF32();
let rec = 0, gpu = 0, read = 0;
const N = 64;
for (let i = 0; i < N + 8; i++) {
  const t0 = performance.now();
  const { logits } = await model.forward(Int32Array.from([5 + i]), 1, 1, { cache, pos0: [32 + i], logitRows: [0] });
  const t1 = performance.now();
  await be.sync();
  const t2 = performance.now();
  await logits.toF32();
  const t3 = performance.now();
  logits.dispose();
  if (i >= 8) { rec += t1 - t0; gpu += t2 - t1; read += t3 - t2; }
}
console.log(`${big ? '1B' : '125M'} decode per token: record ${(rec / N).toFixed(3)} ms, GPU wait ${(gpu / N).toFixed(3)} ms, readback ${(read / N).toFixed(3)} ms; ${be.stats.dispatches} dispatches, ${be.stats.submits} submits`);
be.destroy();
process.exit(0);
