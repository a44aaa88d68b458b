// Sampling cost per token: samplingDistribution + one draw (what `generate` does for each sampled
// token on the host), against its definition measured in the same run (referenceSamplingDistribution:
// sort the whole vocabulary, then cut at k and p). Logits: a real row of the bundled model (V 4096),
// and Zipf-like rows at the vocabulary sizes of Llama 2 (32000), GPT-2 (50257) and Llama 3 (128256).
//   node --import ./scripts/ts.mjs bench/sampling.ts [--quick]

import { fileURLToPath } from 'node:url';
import { getBackend, loadModel } from '../src/index.ts';
import { drawIndex, referenceSamplingDistribution, Rng, samplingDistribution, type SamplingOptions } from '../src/runtime/sampling.ts';
import { bestMs } from './timing.ts';

const quick = process.argv.includes('--quick');
const BUDGET_MS = quick ? 100 : 400;

const best = (fn: () => void) => bestMs(fn, BUDGET_MS);

/** Logits shaped like a language model's: log-probabilities falling as -1.1·log(rank), plus noise. */
function zipf(V: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const order = Array.from({ length: V }, (_, i) => i).sort(() => rng.next() - 0.5);
  const x = new Float32Array(V);
  order.forEach((id, rank) => { x[id] = -1.1 * Math.log(1 + rank) + 0.5 * rng.next(); });
  return x;
}

const bundled = fileURLToPath(new URL('../models/tiny-llama', import.meta.url));
const { model, tokenizer } = await loadModel(bundled, { backend: await getBackend('cpu') });
const prompt = Int32Array.from(tokenizer!.encode('Once upon a time, there was a little'));
const { logits } = await model.forward(prompt, 1, prompt.length, { logitRows: [prompt.length - 1] });
const real = await logits.toF32();

const rows: [string, Float32Array][] = [['tiny-llama (real logits)', real], ['Zipf 32000', zipf(32000, 1)], ['Zipf 50257', zipf(50257, 2)], ['Zipf 128256', zipf(128256, 3)]];
const OPTS: SamplingOptions[] = [{ temperature: 0.8 }, { temperature: 0.8, topK: 50 }, { temperature: 0.8, topP: 0.9 }, { temperature: 0.8, topK: 50, topP: 0.95 }];
console.log('ms per sampled token (distribution + draw): Brickwork vs sorting the whole vocabulary, same run');
console.log('| logits | V | options | kept | sampler ms | full sort ms | × |');
console.log('|---|---:|---|---:|---:|---:|---:|');
for (const [name, x] of rows) {
  const V = x.length;
  for (const o of OPTS) {
    const rng = new Rng(7);
    let kept = 0;
    const fast = best(() => { const d = samplingDistribution(x, 0, V, o); kept = d.ids.length; drawIndex(d.probs, rng); });
    const ref = best(() => { const d = referenceSamplingDistribution(x, 0, V, o); drawIndex(d.probs, rng); });
    const opts = Object.entries(o).map(([k, v]) => `${k} ${v}`).join(', ');
    console.log(`| ${name} | ${V} | ${opts} | ${kept} | ${fast.toFixed(3)} | ${ref.toFixed(3)} | ${(ref / fast).toFixed(1)} |`);
  }
}
