// CPU inference benchmark: prefill and decode tokens/s for the bundled tiny-llama and a random-weight
// Llama-shaped model of ~32M parameters, against the machine's decode limit measured in the same run
// (weight bytes read per token ÷ measured memory read bandwidth).
//   npm run bench            (BENCH_QUICK=1 for a shorter run)

import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { generate, getBackend, llamaSpec, loadModel, randomModel, type Model } from '../src/index.ts';
import { measureMemoryBandwidth } from '../src/backends/cpu/fast/bandwidth.ts';

const quick = process.env.BENCH_QUICK === '1';
const NEW = quick ? 16 : 64;
const PROMPT = quick ? 64 : 256;

/** Bytes of weights one decode step reads: every matrix except the embedding table (one row each). */
function decodeBytes(model: Model): number {
  let n = 0;
  for (const [name, w] of model.weights) if (name !== 'embed.weight' && name !== 'pos_embed.weight') n += w.size;
  if (model.spec.tiedEmbeddings) n += model.weights.get('embed.weight')!.size;
  return n * 4; // f32 on the CPU backend
}

async function run(label: string, model: Model) {
  const prompt = Array.from({ length: PROMPT }, (_, i) => (i * 7919) % model.spec.vocabSize);
  await generate(model, [prompt.slice(0, 8)], { maxNewTokens: 4, stopTokens: [] }); // warm-up (JIT, pools)
  const best = { prefill: 0, decode: 0 };
  for (let rep = 0; rep < (quick ? 1 : 3); rep++) {
    const r = await generate(model, [prompt], { maxNewTokens: NEW, stopTokens: [] });
    best.prefill = Math.max(best.prefill, PROMPT / (r.prefillMs / 1e3));
    best.decode = Math.max(best.decode, r.decodeSteps / (r.decodeMs / 1e3));
  }
  return { label, params: model.numParams, bytes: decodeBytes(model), ...best };
}

const be = await getBackend('cpu');
const bw = measureMemoryBandwidth();
const bundled = await loadModel(fileURLToPath(new URL('../models/tiny-llama', import.meta.url)), { backend: be });
const rand = randomModel(llamaSpec({ vocab: 8000, width: 512, layers: 8, heads: 8, kvHeads: 4, ffn: 1408 }), be, { seed: 1 });
const rows = [await run('tiny-llama (bundled, 7.6M)', bundled.model), await run('random llama (32M)', rand)];

console.log(`machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, Node ${process.version}`);
console.log(`measured memory read bandwidth: ${bw.gbPerS.toFixed(1)} GB/s (${bw.method})`);
console.log(`prompt ${PROMPT} tokens, ${NEW} new tokens, batch 1, greedy, f32 weights; best of ${quick ? 1 : 3}\n`);
const head = ['model', 'params', 'prefill tok/s', 'decode tok/s', 'decode limit tok/s', 'of limit'];
const body = rows.map((r) => {
  const limit = (bw.gbPerS * 1e9) / r.bytes;
  return [r.label, (r.params / 1e6).toFixed(1) + 'M', r.prefill.toFixed(0), r.decode.toFixed(1), limit.toFixed(1), (100 * r.decode / limit).toFixed(0) + '%'];
});
const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
for (const line of [head, w.map((n) => '-'.repeat(n)), ...body]) console.log(line.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  '));
console.log('\ndecode limit = measured bandwidth ÷ weight bytes read per token (all matrices but the embedding table, f32).');
