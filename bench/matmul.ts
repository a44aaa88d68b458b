// Benchmark of the fast CPU matmul (src/backends/cpu/fast/matmul.ts): GFLOP/s of a naive JS triple loop,
// the tiled JS kernel and the WASM SIMD kernel on decode and prefill shapes, both b layouts; then decode
// with weights streamed from memory against the measured read bandwidth (the decode speed limit).
// Run: node --import ./scripts/ts.mjs bench/matmul.ts [--quick]. Ratios are against peers measured in the same run.
// Naive on big shapes runs on a row subset (its cost is linear in M). Other load on the box shows up here.

import os from 'node:os';
import {
  allocF32, freeF32, isResident, matmulF32Js, matmulF32Wasm, matmulPath, startMatmulThreads, stopMatmulThreads,
  wasmAvailable, type MatmulF32Fn,
} from '../src/backends/cpu/fast/matmul.ts';
import { measureMemoryBandwidth, measureMemoryBandwidthParallel } from '../src/backends/cpu/fast/bandwidth.ts';
import { bestMs } from './timing.ts';

const quick = process.argv.includes('--quick');
const BUDGET_MS = quick ? 150 : 600; // per measurement: repeat until this much time has passed, keep the best

const SHAPES: [number, number, number][] = [
  [1, 768, 768], [1, 2048, 2048], [1, 50257, 128], [256, 768, 768], [512, 2048, 512], [2048, 4096, 256],
];

// The obviously correct loop, as a reference kernel would write it: one sum per output.
function naive(out: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number, transB: boolean): void {
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[i * K + k] * b[transB ? j * K + k : k * N + j];
      out[i * N + j] = s;
    }
  }
}

function rand(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; x[i] = s / 2 ** 32 - 0.5; }
  return x;
}

const best = (fn: () => void) => bestMs(fn, BUDGET_MS);

const gflops = (M: number, N: number, K: number, ms: number) => (2 * M * N * K) / (ms * 1e6);
const fmt = (x: number, w = 7, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '-').padStart(w);
const shape = (M: number, N: number, K: number, transB: boolean) =>
  `${String(M).padStart(5)} ${String(N).padStart(6)} ${String(K).padStart(5)} ${transB ? ' true ' : ' false'}`;

const cores = os.availableParallelism?.() ?? os.cpus().length;
console.log(`machine: ${os.cpus()[0]?.model ?? '?'}, ${cores} cores, node ${process.version}, ` +
  `wasm simd: ${wasmAvailable() ? 'yes' : 'no'}, load average ${os.loadavg()[0].toFixed(2)} at start`);
const bw1 = measureMemoryBandwidth();
const bwN = await measureMemoryBandwidthParallel();
console.log(`memory read bandwidth: ${bw1.gbPerS.toFixed(1)} GB/s on 1 thread, ${bwN.gbPerS.toFixed(1)} GB/s on ` +
  `${bwN.threads} threads (${bw1.method}, best of 5 over ${bw1.bytes / 2 ** 20} MiB)\n`);

// --- 1. all paths, one thread, then the WASM path on every core --------------------------------------
console.log('GFLOP/s. wasm: b copied into WASM memory each call; resident: b from allocF32, read in place');
console.log(`(how weights should live); ${cores}t: resident on ${cores} threads (startMatmulThreads).`);
console.log('    M      N     K transB |  naive |     js (x naive) |   wasm (x naive, x js) | resident (x js) |' +
  `   ${cores}t (x 1t) | path`);
for (const transB of [true, false]) {
  for (const [M, N, K] of SHAPES) {
    const a = rand(M * K, 1), b = rand(N * K, 2), out = new Float32Array(M * N);
    const sub = Math.max(1, Math.min(M, Math.floor(2e7 / (N * K)))); // naive: a row subset
    const nMs = best(() => naive(out, a, b, sub, N, K, transB)) * (M / sub);
    const run = (f: MatmulF32Fn, bb: Float32Array) => best(() => f(out, a, bb, M, N, K, transB));
    const jMs = run(matmulF32Js, b);
    let wMs = NaN, rMs = NaN, tMs = NaN;
    if (wasmAvailable()) {
      await startMatmulThreads(1);
      wMs = run(matmulF32Wasm, b);
      const bRes = allocF32(N * K);
      bRes.set(b);
      if (isResident(bRes)) {
        rMs = run(matmulF32Wasm, bRes);
        if ((await startMatmulThreads(cores)) > 1) tMs = run(matmulF32Wasm, bRes);
      }
      freeF32(bRes);
    }
    const [nG, jG, wG, rG, tG] = [nMs, jMs, wMs, rMs, tMs].map((ms) => gflops(M, N, K, ms));
    console.log(`${shape(M, N, K, transB)} | ${fmt(nG, 6)} | ${fmt(jG, 6)} (${fmt(jG / nG, 5, 1)}x) |` +
      ` ${fmt(wG, 6)} (${fmt(wG / nG, 5, 1)}x, ${fmt(wG / jG, 4, 1)}x) | ${fmt(rG, 8)} (${fmt(rG / jG, 4, 1)}x) |` +
      ` ${fmt(tG, 6)} (${fmt(tG / rG, 4, 2)}x) | ${matmulPath(M, N, K, transB)}`);
  }
}
const threads = wasmAvailable() ? await startMatmulThreads(cores) : 1;

// --- 2. decode from memory ------------------------------------------------------------------------------
// Above, a matrix that fits the last-level cache is re-read from it. A model's weights do not fit: here
// each call reads a different resident copy of b (>= 256 MiB in all), so b streams from DRAM as in decode.
console.log('\ndecode, weights streamed from memory (resident b, copies cycled past the caches): GB/s of b read');
console.log('    M      N     K transB | 1 thread (% of 1t bw) | ' + `${threads} threads (% of ${threads}t bw)`);
for (const transB of [true, false]) {
  for (const [M, N, K] of SHAPES.filter(([m]) => m === 1)) {
    const copies = Math.max(2, Math.ceil((256 * 2 ** 20) / (4 * N * K)));
    const bs = Array.from({ length: copies }, (_, i) => { const b = allocF32(N * K); b.set(rand(N * K, 10 + i)); return b; });
    const a = rand(M * K, 3), out = new Float32Array(M * N);
    const gbs = () => {
      const ms = best(() => { for (const b of bs) matmulF32Wasm(out, a, b, M, N, K, transB); }) / copies;
      return (4 * N * K) / (ms * 1e6);
    };
    await startMatmulThreads(1);
    const g1 = gbs();
    await startMatmulThreads(threads);
    const gN = gbs();
    console.log(`${shape(M, N, K, transB)} | ${fmt(g1, 8, 1)} (${fmt((100 * g1) / bw1.gbPerS, 4, 0)}%)     |` +
      ` ${fmt(gN, 9, 1)} (${fmt((100 * gN) / bwN.gbPerS, 4, 0)}%)`);
    for (const b of bs) freeF32(b);
  }
}
await stopMatmulThreads();
const msPerToken = (gbPerS: number) => ((4 * 124e6) / (gbPerS * 1e9)) * 1e3;
console.log(`\ndecode floor for f32 weights, e.g. a 124M-parameter model (496 MB per token): ` +
  `${msPerToken(bw1.gbPerS).toFixed(1)} ms/token on 1 thread, ${msPerToken(bwN.gbPerS).toFixed(1)} ms on ${bwN.threads}.`);
