// Where a decode step's time goes on WebGPU: recording the ops (JS + Dawn calls), waiting for the GPU,
// and reading the logits back, for a random-weight Llama-shaped model (default ~125M, f16), unfused,
// fused (ForwardOptions.fuse), fused with q, k and v in three dispatches, and fused with submits during
// recording, in the same run; then whole generations waiting for each token against pipelined.
//   node --import ./scripts/ts.mjs bench/decode-breakdown.ts [--1b] [--narrow] [--tokens N]
// --narrow keeps the layer count and every dispatch but shrinks the widths (C 64, F 128, V 512): the
// host half (recording) depends only on the dispatches, so it can be measured on an emulated GPU, or
// exactly with Dawn's null backend, which executes nothing: BRICKWORK_DAWN_FLAGS=backend=null.

import { WebGpuBackend, generate, llamaSpec, randomModel } from '../src/index.ts';

const args = process.argv.slice(2);
const big = args.includes('--1b');
const narrow = args.includes('--narrow');
const ti = args.indexOf('--tokens');
const N = ti >= 0 ? Number(args[ti + 1]) : 64;
const be = await WebGpuBackend.create();
const nullBackend = /backend=null/.test(process.env.BRICKWORK_DAWN_FLAGS ?? '');
let dims = big ? { vocab: 32000, width: 2048, layers: 16, heads: 32, kvHeads: 8, ffn: 8192 } : { vocab: 32000, width: 768, layers: 12, heads: 12, kvHeads: 12, ffn: 2048 };
if (narrow) dims = { ...dims, vocab: 512, width: 64 * (dims.heads / dims.kvHeads), heads: dims.heads / dims.kvHeads * 2, kvHeads: 2, ffn: 128 };
const label = `${big ? '1B' : '125M'}${narrow ? ' (narrow widths)' : ''}`;
const model = randomModel(llamaSpec({ ...dims, context: 2048 }), be, { seed: 1, dtype: 'f16' });
console.log(`${label}: ${be.info.vendor} ${be.info.architecture} ${be.info.description}`.trim());
console.log('| path | dispatches/token | record ms | GPU wait ms | readback ms | total ms | tok/s |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
// The third path keeps q, k and v in three dispatches (fused_linear, and fused_kv_write for k and v; see
// WebGpuBackend.maxOpTensors); the last also submits every 24 dispatches, so the GPU runs while the host
// records (see WebGpuBackend.submitEvery).
const PATHS = [[false, 0, false], [true, 0, false], [true, 0, true], [true, 24, false]] as const;
const bindings = be.maxOpTensors;
for (const [fuse, submitEvery, apart] of PATHS) {
  be.submitEvery = submitEvery;
  be.maxOpTensors = apart ? 7 : bindings;
  const cache = model.newCache(1, 512);
  const prompt = Int32Array.from({ length: 32 }, (_, i) => (i * 7 + 1) % dims.vocab);
  await (await model.forward(prompt, 1, 32, { cache, logitRows: [31] })).logits.toF32();
  let rec = 0, gpu = 0, read = 0, dispatches = 0;
  const W = 4;
  for (let i = 0; i < N + W; i++) {
    const d0 = be.stats.dispatches;
    const t0 = performance.now();
    const { logits } = await model.forward(Int32Array.from([5 + i]), 1, 1, { cache, pos0: [32 + i], logitRows: [0], fuse });
    const t1 = performance.now();
    await be.sync();
    const t2 = performance.now();
    await logits.toF32();
    const t3 = performance.now();
    logits.dispose();
    if (i >= W) { rec += t1 - t0; gpu += t2 - t1; read += t3 - t2; dispatches += be.stats.dispatches - d0; }
  }
  cache.dispose();
  const total = (rec + gpu + read) / N;
  console.log(`| ${fuse ? 'fused' : 'unfused'}${apart ? ', q k v apart' : ''}${submitEvery ? `, submit every ${submitEvery}` : ''} | ${dispatches / N} | ${(rec / N).toFixed(3)} | ${(gpu / N).toFixed(3)} | ${(read / N).toFixed(3)} | ${total.toFixed(3)} | ${(1000 / total).toFixed(1)} |`);
}

// Whole greedy generations: waiting for each token before recording the next step, against pipelined
// (GenerateOptions.pipeline: the next step is recorded from the ids still on the device, so the host's
// recording overlaps the GPU's work). The same tokens either way; best of 3 alternating runs.
if (nullBackend) {
  // The null backend executes nothing, so the ids read back are whatever the staging buffer held;
  // read them as zeros so that both orders can run (they then measure host costs alone).
  const read = be.read.bind(be);
  be.read = async (t) => { await read(t); return t.dtype === 'i32' ? new Int32Array(t.size) : new Float32Array(t.size); };
}
be.submitEvery = 0;
be.maxOpTensors = bindings;
const prompt = Array.from({ length: 32 }, (_, i) => (i * 7 + 1) % dims.vocab);
await generate(model, [prompt], { maxNewTokens: 8, stopTokens: [] });
const best = { serial: Infinity, pipelined: Infinity };
for (let rep = 0; rep < 3; rep++) {
  for (const pipeline of [false, true]) {
    const r = await generate(model, [prompt], { maxNewTokens: N + 1, stopTokens: [], pipeline });
    const ms = r.decodeMs / r.decodeSteps;
    best[pipeline ? 'pipelined' : 'serial'] = Math.min(best[pipeline ? 'pipelined' : 'serial'], ms);
  }
}
console.log('\n| generate(), greedy | ms/token | tok/s |\n|---|---:|---:|');
console.log(`| waiting for each token | ${best.serial.toFixed(3)} | ${(1000 / best.serial).toFixed(1)} |`);
console.log(`| pipelined (as shipped) | ${best.pipelined.toFixed(3)} | ${(1000 / best.pipelined).toFixed(1)} |`);
console.log(`pipelined / waiting: ${(best.serial / best.pipelined).toFixed(2)}× the tokens per second`);
be.destroy();
process.exit(0);
