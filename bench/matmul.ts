// Benchmark of the fast CPU matmul (src/backends/cpu/fast/matmul.ts): GFLOP/s of a naive JS triple loop,
// the tiled JS kernel and the WASM SIMD kernel on decode and prefill shapes, both b layouts, plus the
// machine's read bandwidth and the decode speed limit it implies. Run: node --import tsx bench/matmul.ts
// Ratios are against the naive loop measured in the same run. Naive on big shapes runs on a row subset
// (its cost is linear in M). Pass --quick for fewer repetitions.

import os from 'node:os';
import {
  allocF32, freeF32, isResident, matmulF32Js, matmulF32Wasm, matmulPath, wasmAvailable, type MatmulF32Fn,
} from '../src/backends/cpu/fast/matmul.ts';
import { measureMemoryBandwidth } from '../src/backends/cpu/fast/bandwidth.ts';

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

/** Best wall time in ms of fn over repetitions filling BUDGET_MS (at least 2 runs: the first warms up). */
function best(fn: () => void): number {
  let bestMs = Infinity, spent = 0, runs = 0;
  while (runs < 2 || spent < BUDGET_MS) {
    const t = performance.now();
    fn();
    const dt = performance.now() - t;
    bestMs = Math.min(bestMs, dt); spent += dt; runs++;
    if (runs >= 2 && dt > 3 * BUDGET_MS) break;
  }
  return bestMs;
}

const gflops = (M: number, N: number, K: number, ms: number) => (2 * M * N * K) / (ms * 1e6);
const fmt = (x: number, w = 7, d = 2) => x.toFixed(d).padStart(w);

console.log(`machine: ${os.cpus()[0]?.model ?? '?'} x${os.cpus().length}, node ${process.version}, ` +
  `wasm simd: ${wasmAvailable() ? 'yes' : 'no'}`);

const bw = measureMemoryBandwidth();
console.log(`memory read bandwidth: ${bw.gbPerS.toFixed(2)} GB/s (${bw.method}, best of 3 over ${bw.bytes / 2 ** 20} MiB)\n`);

console.log('b resident = b allocated with allocF32 (read in place, not copied per call): how decode weights should live.');
console.log('limit = M x bandwidth / 2: the GFLOP/s at which reading the f32 b once per call takes all the time.\n');
console.log('   M      N     K  transB | naive GF/s |  js GF/s (x naive) | wasm GF/s (x naive, x js) | b resident GF/s (x js) | limit GF/s (% reached) | path');
for (const transB of [true, false]) {
  for (const [M, N, K] of SHAPES) {
    const a = rand(M * K, 1), b = rand(N * K, 2), out = new Float32Array(M * N);
    // naive: time a row subset so a big shape takes well under a second
    const rows = Math.max(1, Math.min(M, Math.floor(2e7 / (N * K))));
    const nMs = best(() => naive(out, a, b, rows, N, K, transB)) * (M / rows);
    const run = (f: MatmulF32Fn, bb: Float32Array) => best(() => f(out, a, bb, M, N, K, transB));
    const jMs = run(matmulF32Js, b);
    let wMs = NaN, rMs = NaN;
    if (wasmAvailable()) {
      wMs = run(matmulF32Wasm, b);
      const bRes = allocF32(N * K);
      bRes.set(b);
      rMs = isResident(bRes) ? run(matmulF32Wasm, bRes) : NaN;
      freeF32(bRes);
    }
    const nG = gflops(M, N, K, nMs), jG = gflops(M, N, K, jMs), wG = gflops(M, N, K, wMs), rG = gflops(M, N, K, rMs);
    // (2*M*N*K flops) / (4*N*K bytes / bandwidth) = M * bandwidth / 2
    const lim = (M * bw.gbPerS) / 2;
    const limit = M <= 8 ? `${fmt(lim, 6, 1)} (${fmt((100 * Math.max(wG, rG || 0)) / lim, 3, 0)}%)` : '';
    console.log(`${String(M).padStart(5)} ${String(N).padStart(6)} ${String(K).padStart(5)}  ${transB ? ' true ' : ' false'} |` +
      ` ${fmt(nG, 10)} | ${fmt(jG, 8)} (${fmt(jG / nG, 5, 1)}x) | ${fmt(wG, 9)} (${fmt(wG / nG, 5, 1)}x, ${fmt(wG / jG, 4, 1)}x) |` +
      ` ${fmt(rG, 15)} (${fmt(rG / jG, 4, 1)}x) | ${limit.padEnd(22)} | ${matmulPath(M, N, K, transB)}`);
  }
}
