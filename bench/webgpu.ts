// WebGPU benchmark, with its peer measured in the same run: fp32 matmul TFLOP/s (vs torch.matmul,
// TF32 off), batch-1 decode and prefill tokens/s for the bundled tiny-llama and random-weight
// Llama-shaped 125M and 1B models in f16 (vs HF transformers eager, same dtype), the copy-bandwidth
// decode limit for the 1B model (and the limit from the rate a compute kernel reads at), dispatches per decoded token, and GPU memory across 1,000 generations.
//   node --import ./scripts/ts.mjs bench/webgpu.ts [--quick | --smoke] [--peer]     (--peer runs bench/peer_hf.py too)
// --smoke shrinks every size so that an emulated GPU gets through the whole script (to check it).
// --matmul-only stops after the matmul (to compare Dawn settings: BRICKWORK_DAWN_FLAGS=…).

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { WebGpuBackend, generate, llamaSpec, loadModel, ops, randomModel, type Model, type SamplingOptions } from '../src/index.ts';

const smoke = process.argv.includes('--smoke');
const quick = smoke || process.argv.includes('--quick');
const peer = process.argv.includes('--peer');
const bundled = fileURLToPath(new URL('../models/tiny-llama', import.meta.url));
const be = await WebGpuBackend.create();
const log = (s: string) => console.log(s);
log(`adapter: ${be.info.vendor} ${be.info.architecture} ${be.info.description}; features: ${[...be.features].join(', ') || 'none'}`);

async function time(f: () => unknown, reps: number): Promise<number> {
  f(); await be.sync();
  const t = performance.now();
  for (let i = 0; i < reps; i++) f();
  await be.sync();
  return (performance.now() - t) / 1e3 / reps;
}

// fp32 matmul, with each output tile size of the backend (WebGpuBackend.matmulTile), the 128-wide one with
// one and two shared-memory buffers (matmulStages); `matmul` keeps the default's.
const matmul: Record<string, number> = {};
const matmul128: Record<string, number> = {};
const matmul128x2: Record<string, number> = {};
for (const n of smoke ? [128, 256] : quick ? [1024, 4096] : [4096, 8192]) {
  const data = new Float32Array(n * n).map((_, i) => ((i * 2654435761) % 1000) / 1000 - 0.5);
  const a = be.upload(data, [n, n], 'f32'), b = be.upload(data, [n, n], 'f32');
  for (const [tile, stages, into, what] of [[64, 1, matmul, 'tile 64'], [128, 1, matmul128, 'tile 128'], [128, 2, matmul128x2, 'tile 128, two buffers']] as const) {
    be.matmulTile = tile;
    be.matmulStages = stages;
    let out = ops.matmul(a, b);
    const s = await time(() => { out.dispose(); out = ops.matmul(a, b); }, n >= 8192 ? 4 : 10);
    into[n] = (2 * n ** 3) / s / 1e12;
    out.dispose();
    log(`matmul ${n}³ fp32, ${what}: ${into[n].toFixed(2)} TFLOP/s`);
  }
  be.matmulTile = 64;
  be.matmulStages = 1;
  a.dispose(); b.dispose();
}

if (process.argv.includes('--matmul-only')) {
  be.destroy();
  process.exit(0);
}

// device-to-device copy bandwidth (bytes read + written)
const copyBytes = (smoke ? 4 : 256) * 2 ** 20;
const src = be.device.createBuffer({ size: copyBytes, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
const dst = be.device.createBuffer({ size: copyBytes, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
// Copies are recorded into one command buffer per measurement so that submit overhead does not count.
const copies = async (n: number) => {
  const e = be.device.createCommandEncoder();
  for (let i = 0; i < n; i++) e.copyBufferToBuffer(i % 2 ? dst : src, 0, i % 2 ? src : dst, 0, copyBytes);
  be.device.queue.submit([e.finish()]);
  await be.device.queue.onSubmittedWorkDone();
};
await copies(4);
let t0 = performance.now();
await copies(40);
const copyGBps = (2 * copyBytes * 40) / ((performance.now() - t0) / 1e3) / 1e9;
src.destroy(); dst.destroy();
log(`device-to-device copy: ${copyGBps.toFixed(0)} GB/s (read + write)`);

// What a compute kernel can read: every thread streams vec4<u32> loads (four in flight per iteration,
// coalesced across the grid) and folds them into one word it writes, so the loads cannot be dropped.
// Decode's GEMVs read their weights this way; this rate, not the copy rate, is what they can reach.
const readBytes = (smoke ? 4 : quick ? 64 : 512) * 2 ** 20;
const rsrc = be.device.createBuffer({ size: readBytes, usage: GPUBufferUsage.STORAGE });
const rthreads = smoke ? 4096 : 256 * 1024; // a grid of about one wave on a large GPU; each thread loads at least 16 vec4
const rout = be.device.createBuffer({ size: 4 * rthreads, usage: GPUBufferUsage.STORAGE });
const rpipe = be.device.createComputePipeline({
  layout: 'auto',
  compute: {
    entryPoint: 'main',
    module: be.device.createShaderModule({ code: `
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let n = arrayLength(&src); let stride = ${rthreads}u;
  var acc = vec4<u32>(0u);
  for (var i = g.x; i + 3u * stride < n; i += 4u * stride) {
    acc ^= src[i] + src[i + stride] + src[i + 2u * stride] + src[i + 3u * stride];
  }
  o[g.x] = acc.x ^ acc.y ^ acc.z ^ acc.w;
}` }),
  },
});
const rbind = be.device.createBindGroup({ layout: rpipe.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: rsrc } }, { binding: 1, resource: { buffer: rout } }] });
const reads = async (n: number) => {
  const e = be.device.createCommandEncoder();
  const pass = e.beginComputePass();
  pass.setPipeline(rpipe); pass.setBindGroup(0, rbind);
  for (let i = 0; i < n; i++) pass.dispatchWorkgroups(rthreads / 256);
  pass.end();
  be.device.queue.submit([e.finish()]);
  await be.device.queue.onSubmittedWorkDone();
};
await reads(4);
t0 = performance.now();
await reads(quick ? 4 : 40);
const readGBps = (readBytes * (quick ? 4 : 40)) / ((performance.now() - t0) / 1e3) / 1e9;
rsrc.destroy(); rout.destroy();
log(`kernel read rate: ${readGBps.toFixed(0)} GB/s (vec4 loads, ${readBytes / 2 ** 20} MiB per pass)`);

// The GPU's floor per dispatch: one-workgroup dispatches recorded in one pass, each either reading what
// the previous one wrote (Dawn puts a barrier between them, as between a model's dependent ops) or
// writing a buffer of its own (no barrier). A decode step can go no faster than its dispatches × this.
const floorN = smoke ? 50 : 2000;
const fpipe = be.device.createComputePipeline({
  layout: 'auto',
  compute: {
    entryPoint: 'main',
    module: be.device.createShaderModule({ code: `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) i: u32) { y[i] = x[i] + 1.0; }` }),
  },
});
const fbuf = (n: number) => Array.from({ length: n }, () => be.device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE }));
const fbind = (x: GPUBuffer, y: GPUBuffer) => be.device.createBindGroup({ layout: fpipe.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: x } }, { binding: 1, resource: { buffer: y } }] });
const [fa, fb] = fbuf(2);
const chained = [fbind(fa, fb), fbind(fb, fa)];
const ownOut = fbuf(floorN);
const separate = ownOut.map((y) => fbind(fa, y));
const floorUs = async (groups: (i: number) => GPUBindGroup) => {
  const once = async () => {
    const e = be.device.createCommandEncoder();
    const pass = e.beginComputePass();
    pass.setPipeline(fpipe);
    for (let i = 0; i < floorN; i++) { pass.setBindGroup(0, groups(i)); pass.dispatchWorkgroups(1); }
    pass.end();
    const cmd = e.finish();
    const t = performance.now();
    be.device.queue.submit([cmd]);
    await be.device.queue.onSubmittedWorkDone();
    return (performance.now() - t) * 1e3 / floorN;
  };
  await once();
  return Math.min(await once(), await once(), await once());
};
const floorChained = await floorUs((i) => chained[i % 2]);
const floorSeparate = await floorUs((i) => separate[i]);
for (const b of [fa, fb, ...ownOut]) b.destroy();
log(`GPU time per dispatch (one workgroup, ${floorN} in a pass, best of 3): ${floorChained.toFixed(2)} µs when each reads the previous one's output, ${floorSeparate.toFixed(2)} µs when independent`);

// One row's draw (the sample op) against its argmax, at a 32,000-token vocabulary: what picking a
// token on the device costs per decode step.
const drawUs: Record<string, number> = {};
{
  const Vs = smoke ? 4096 : 32000;
  const lg = be.upload(Float32Array.from({ length: Vs }, (_, i) => 4 * Math.sin(i * 12.9898) - Math.log(1 + i) / 2), [1, Vs], 'f32');
  const uu = be.upload(Float32Array.from([0.37]), [1], 'f32');
  const draws: [string, () => ReturnType<typeof ops.topk>][] = [
    ['argmax', () => ops.topk(lg, 1)],
    ['sample, temperature', () => ops.sample(lg, uu, { temperature: 0.8, topK: 0, topP: 1 })],
    ['sample, top-k 50', () => ops.sample(lg, uu, { temperature: 0.8, topK: 50, topP: 1 })],
    ['sample, top-p 0.95', () => ops.sample(lg, uu, { temperature: 0.8, topK: 0, topP: 0.95 })],
    ['sample, top-k 50, top-p 0.95', () => ops.sample(lg, uu, { temperature: 0.8, topK: 50, topP: 0.95 })],
  ];
  for (const [what, f] of draws) {
    let out = f();
    drawUs[what] = 1e6 * await time(() => { out.dispose(); out = f(); }, smoke ? 3 : 50);
    out.dispose();
  }
  lg.dispose(); uu.dispose();
  log(`one row's token at V ${Vs} (µs per op: wall time of ${smoke ? 3 : 50} in a row): ${Object.entries(drawUs).map(([w, us]) => `${w} ${us.toFixed(0)}`).join(', ')}`);
}

/** Bytes of weights one decode step reads (all matrices but the embedding table, in their GPU dtype). */
function weightBytes(m: Model): number {
  let n = 0;
  for (const [name, w] of m.weights) if (name !== 'embed.weight') n += w.size * (w.dtype === 'f16' || w.dtype === 'bf16' ? 2 : 4);
  return n;
}

/** The sampling that the sampled-decoding rows use. */
const SAMPLING: SamplingOptions = { temperature: 0.8, topK: 50, topP: 0.95, seed: 1 };
const SAMPLED = 'temperature 0.8, top-k 50, top-p 0.95';

interface Row { name: string; params: number; decode: number; longDecode?: { from: number; to: number; decode: number; unsplit: number; shortTo: number }; overlapped: number; serial: number; prefill: number; prefill128: number; dispatchesPerToken: number; weightBytes: number; unfused: { decode: number; dispatchesPerToken: number }; sampled: { device: number; host: number }; noSubgroups?: Rates; packedF16?: Rates; columns: Record<number, number> }
/** Decode and prefill tokens/s with one kernel setting turned off. */
type Rates = { decode: number; prefill: number };
async function measure(name: string, model: Model): Promise<Row> {
  const V = model.spec.vocabSize;
  const prompt = Array.from({ length: 32 }, (_, i) => (i * 7919 + 11) % V);
  await generate(model, [prompt], { maxNewTokens: 8, stopTokens: [] }); // warm-up: pipelines, pools
  const NEW = smoke ? 4 : quick ? 32 : 128;
  // Decode as shipped (fused on WebGPU), and unfused for comparison.
  const run = async (fuse?: boolean, pipeline?: boolean, from = prompt, sampling?: SamplingOptions, sampleOnDevice?: boolean) => {
    const d0 = be.stats.dispatches;
    const r = await generate(model, [from], { maxNewTokens: NEW, stopTokens: [], fuse, pipeline, sampling, sampleOnDevice });
    return { decode: r.decodeSteps / (r.decodeMs / 1e3), dispatchesPerToken: (be.stats.dispatches - d0) / (r.decodeSteps + 1) };
  };
  const unfused = await run(false);
  const { decode, dispatchesPerToken: perToken } = await run();
  // The same with a submit every 24 dispatches, so the GPU starts on a step while the host records the rest.
  const every = be.submitEvery;
  be.submitEvery = 24;
  const overlapped = (await run()).decode;
  be.submitEvery = every;
  // Waiting for each token before recording the next step (GenerateOptions.pipeline off).
  const serial = (await run(undefined, false)).decode;
  // Sampled decoding: drawn on the device by the sample op (pipelined), and from logits read back and
  // drawn on the host.
  const sampled = { device: 0, host: 0 };
  for (const where of ['device', 'host'] as const) {
    await run(undefined, undefined, prompt, SAMPLING, where === 'device'); // compile
    sampled[where] = (await run(undefined, undefined, prompt, SAMPLING, where === 'device')).decode;
  }
  // Decoding deep into the context (the last NEW positions of at most 2,048; 800 with --smoke, still
  // past the split), where attention reads the whole KV cache for every token: what a long conversation
  // costs over the short prompt above.
  const LONG = Math.min(smoke ? 800 : 2048, model.spec.maxContext) - NEW - 1;
  let longDecode: Row['longDecode'];
  if (LONG > 0) {
    const longPrompt = Array.from({ length: LONG }, (_, i) => (i * 7919 + 11) % V);
    const rate = async () => (await run(undefined, undefined, longPrompt)).decode;
    const decodeLong = await rate();
    // The same without splitting attention's blocks over workgroups (WebGpuBackend.attentionSplit).
    const split = be.attentionSplit;
    be.attentionSplit = 0;
    const unsplit = await rate();
    be.attentionSplit = split;
    longDecode = { from: LONG, to: LONG + NEW, decode: decodeLong, unsplit, shortTo: 32 + NEW };
  }
  const P = smoke ? 64 : 512;
  const long = Int32Array.from({ length: P }, (_, i) => (i * 104729 + 7) % V);
  const pre = async () => { const { logits } = await model.forward(long, 1, P, { logitRows: [P - 1] }); await logits.toF32(); logits.dispose(); };
  // Prefill tokens/s with each matmul tile (the 128-wide one widens 16-bit weights as it loads them).
  const prefillRate = async (tile: 64 | 128) => {
    be.matmulTile = tile;
    await pre();
    const t = performance.now();
    for (let i = 0; i < 3; i++) await pre();
    be.matmulTile = 64;
    return (3 * P) / ((performance.now() - t) / 1e3);
  };
  const prefill = await prefillRate(64);
  const prefill128 = await prefillRate(128);
  // Decode and prefill with a kernel setting of the backend turned off for the run, then back on.
  const without = async (set: (on: boolean) => void) => {
    set(false);
    await generate(model, [prompt], { maxNewTokens: 8, stopTokens: [] }); // the other kernels compile here
    const r = { decode: (await run()).decode, prefill: await prefillRate(64) };
    set(true);
    return r;
  };
  // Reductions joined by a shared-memory tree instead of subgroup operations (where the device has them).
  const noSubgroups = be.useSubgroups ? await without((on) => { be.useSubgroups = on; }) : undefined;
  // f16 weights read as u32 pairs instead of WGSL f16 (where the adapter has shader-f16 and the model f16 weights).
  const packedF16 = be.useShaderF16 && [...model.weights.values()].some((w) => w.dtype === 'f16')
    ? await without((on) => { be.useShaderF16 = on; }) : undefined;
  // Decode with each number of output columns per GEMV workgroup (WebGpuBackend.gemvColumns).
  const columns: Record<number, number> = {};
  const shipped = be.gemvColumns;
  for (const c of [1, 2, 4, 8]) {
    if (c === shipped) { columns[c] = decode; continue; }
    be.gemvColumns = c;
    await generate(model, [prompt], { maxNewTokens: 8, stopTokens: [] }); // compile
    columns[c] = (await run()).decode;
  }
  be.gemvColumns = shipped;
  const row = { name, params: model.numParams, decode, longDecode, overlapped, serial, sampled, prefill, prefill128, dispatchesPerToken: perToken, weightBytes: weightBytes(model), unfused, noSubgroups, packedF16, columns };
  log(`${name}: decode ${decode.toFixed(1)} tok/s (waiting for each token ${serial.toFixed(1)}, unfused ${unfused.decode.toFixed(1)}, submit every 24 ${overlapped.toFixed(1)}), prefill ${prefill.toFixed(0)} tok/s (tile 128: ${prefill128.toFixed(0)}), ${perToken.toFixed(0)} dispatches/token (unfused ${unfused.dispatchesPerToken.toFixed(0)})`);
  return row;
}

const rows: Row[] = [];
const tiny = (await loadModel(bundled, { backend: be })).model;
rows.push(await measure('tiny-llama', tiny));

// GPU memory across 1,000 consecutive generations (pooled buffers must be reused, not regrown).
const gens = smoke ? 10 : quick ? 100 : 1000;
const prompt = [1031, 824, 259, 555];
for (let i = 0; i < 10; i++) await generate(tiny, [prompt], { maxNewTokens: 4, stopTokens: [] });
const memBefore = be.stats.allocatedBytes;
for (let i = 0; i < gens; i++) await generate(tiny, [prompt], { maxNewTokens: 4, stopTokens: [] });
const memAfter = be.stats.allocatedBytes;
log(`GPU memory over ${gens} generations: ${(memBefore / 2 ** 20).toFixed(1)} MiB → ${(memAfter / 2 ** 20).toFixed(1)} MiB`);

for (const [name, dims] of [
  ['125M', { vocab: 32000, width: 768, layers: 12, heads: 12, ffn: 2048 }],
  ['1B', { vocab: 32000, width: 2048, layers: 16, heads: 32, kvHeads: 8, ffn: 8192 }],
] as const) {
  if ((quick && name === '1B') || smoke) continue;
  const m = randomModel(llamaSpec({ ...dims, context: 2048 }), be, { seed: 1, dtype: 'f16' });
  rows.push(await measure(name, m));
  for (const w of m.weights.values()) w.dispose();
}

let hf: { device: string; matmul_tflops: Record<string, number>; copy_gbps: number; models: Record<string, { decode_tok_s: number; prefill_tok_s: number; decode_long_tok_s?: number; long_from?: number }> } | undefined;
if (peer) {
  const json = execFileSync('python3', [fileURLToPath(new URL('peer_hf.py', import.meta.url)), ...(quick ? ['--quick'] : []), '--bundled', bundled], { encoding: 'utf8', maxBuffer: 1 << 24 });
  hf = JSON.parse(json.trim().split('\n').pop()!);
}

const fmt = (x: number | undefined, d = 1) => (x === undefined ? '—' : x.toFixed(d));
log(`\n${new Date().toISOString().slice(0, 10)} · ${be.info.description || be.info.vendor}${hf ? ` · peer: ${hf.device}, PyTorch + HF transformers eager` : ''}`);
log('\nfp32 matmul (TFLOP/s)      tile 64   tile 128   128, 2 buffers   torch (TF32 off)   ratio 64   ratio 128   ratio 128×2');
const pct = (x: number, peer: number | undefined) => (peer ? (100 * x / peer).toFixed(0) + '%' : '—');
for (const n of Object.keys(matmul)) {
  const t = hf?.matmul_tflops[n];
  log(`  ${`${n}³`.padEnd(24)} ${fmt(matmul[n], 2).padStart(7)}   ${fmt(matmul128[n], 2).padStart(8)}   ${fmt(matmul128x2[n], 2).padStart(14)}   ${fmt(t, 2).padStart(16)}   ${pct(matmul[n], t).padStart(8)}   ${pct(matmul128[n], t).padStart(9)}   ${pct(matmul128x2[n], t).padStart(11)}`);
}
log('\nmodel        params   decode tok/s (HF, ×)        prefill tok/s (HF, ×)       dispatches/token   unfused: decode tok/s, dispatches/token');
for (const r of rows) {
  const p = hf?.models[r.name];
  log(`  ${r.name.padEnd(10)} ${(r.params / 1e6).toFixed(0).padStart(5)}M   ${fmt(r.decode).padStart(8)} (${fmt(p?.decode_tok_s)}, ${p ? (r.decode / p.decode_tok_s).toFixed(2) + '×' : '—'})`.padEnd(58) +
    `${fmt(r.prefill, 0).padStart(8)} (${fmt(p?.prefill_tok_s, 0)}, ${p ? (r.prefill / p.prefill_tok_s).toFixed(2) + '×' : '—'})`.padEnd(30) + `${r.dispatchesPerToken.toFixed(0).padStart(6)}` +
    `             ${fmt(r.unfused.decode).padStart(8)}, ${r.unfused.dispatchesPerToken.toFixed(0)}`);
}
for (const r of rows) {
  const p = hf?.models[r.name];
  log(`  waiting for each token before recording the next step, ${r.name}: decode ${fmt(r.serial)} tok/s (pipelined as shipped: ${(r.decode / r.serial).toFixed(2)}×)`);
  log(`  sampled decoding (${SAMPLED}), ${r.name}: drawn on the device ${fmt(r.sampled.device)} tok/s, logits read back and drawn on the host ${fmt(r.sampled.host)} tok/s ` +
    `(${(r.sampled.device / r.sampled.host).toFixed(2)}×; greedy ${fmt(r.decode)} tok/s)`);
  log(`  submitting every 24 dispatches, ${r.name}: decode ${fmt(r.overlapped)} tok/s${p ? ` (${(r.overlapped / p.decode_tok_s).toFixed(2)}× HF)` : ''}`);
  for (const [off, what, shipped] of [[r.noSubgroups, 'reductions without subgroup operations', 'with them'], [r.packedF16, 'f16 weights as u32 pairs instead of WGSL f16', 'shader-f16']] as const) {
    if (!off) continue;
    log(`  ${what}, ${r.name}: decode ${fmt(off.decode)} tok/s, prefill ${fmt(off.prefill, 0)} tok/s ` +
      `(${shipped}, as shipped: ${(r.decode / off.decode).toFixed(2)}× and ${(r.prefill / off.prefill).toFixed(2)}×)`);
  }
  log(`  GEMV output columns per workgroup, ${r.name}: ${Object.entries(r.columns).map(([c, d]) => `${c}: ${fmt(d)}`).join(', ')} tok/s (${be.gemvColumns} as shipped)`);
  const ld = r.longDecode;
  if (ld) {
    const hfLong = p?.long_from === ld.from ? p.decode_long_tok_s : undefined;
    log(`  decoding positions ${ld.from}–${ld.to}, ${r.name}: ${fmt(ld.decode)} tok/s (${(ld.decode / r.decode).toFixed(2)}× the rate at positions 32–${ld.shortTo}` +
      `${hfLong ? `; HF eager ${fmt(hfLong)} tok/s, ${(ld.decode / hfLong).toFixed(2)}×` : ''}); ` +
      `attention's blocks not split over workgroups: ${fmt(ld.unsplit)} tok/s (split, as shipped: ${(ld.decode / ld.unsplit).toFixed(2)}×)`);
  }
  const ms = (r.dispatchesPerToken * floorChained) / 1e3;
  log(`  dispatch floor, ${r.name}: ${r.dispatchesPerToken.toFixed(0)} dispatches × ${floorChained.toFixed(2)} µs = ${ms.toFixed(2)} ms per token, at most ${(1e3 / ms).toFixed(0)} tok/s from dispatches alone`);
}
const big = rows.find((r) => r.name === '1B');
if (big) {
  // The HBM limit uses the fastest copy rate measured in this run: torch's (when the peer ran) reaches
  // nearer the memory's rate than WebGPU's copyBufferToBuffer.
  for (const [who, rate] of [['WebGPU copy', copyGBps], ['torch copy', hf?.copy_gbps], ['WebGPU kernel read', readGBps]] as const) {
    if (!rate) continue;
    const limit = (rate * 1e9) / big.weightBytes;
    log(`\n1B decode limit (${who}): ${rate.toFixed(0)} GB/s ÷ ${(big.weightBytes / 1e9).toFixed(2)} GB of f16 weights per token = ${limit.toFixed(0)} tok/s; reached ${big.decode.toFixed(0)} tok/s = ${(100 * big.decode / limit).toFixed(0)}% (submitting every 24 dispatches: ${big.overlapped.toFixed(0)} tok/s = ${(100 * big.overlapped / limit).toFixed(0)}%)`);
  }
}
log(`GPU memory: ${(memBefore / 2 ** 20).toFixed(1)} MiB before and ${(memAfter / 2 ** 20).toFixed(1)} MiB after ${gens} generations (growth ${((memAfter - memBefore) / 2 ** 20).toFixed(1)} MiB)`);
if (process.env.OUT) writeFileSync(`${process.env.OUT}/webgpu-bench.json`, JSON.stringify({ adapter: be.info, matmul, matmul128, matmul128x2, copyGBps, readGBps, floorChained, floorSeparate, drawUs, rows, memBefore, memAfter, gens, hf }, null, 2));
be.destroy();
process.exit(0);
