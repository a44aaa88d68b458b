import { matmulF32Naive, matmulF32Wasm, startMatmulThreads, stopMatmulThreads, allocF32 } from './src/backends/cpu/fast/matmul.ts';
let seed = 1; const rnd = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
console.log('threads', await startMatmulThreads());
for (const [M, N, K] of [[1, 4099, 257], [2, 2051, 513], [3, 1027, 1030], [70, 333, 129], [17, 1000, 77]]) for (const tB of [true, false]) for (const acc of [false, true]) {
  const a = Float32Array.from({ length: M * K }, rnd), b = Float32Array.from({ length: N * K }, rnd);
  const init = Float32Array.from({ length: M * N }, rnd);
  const r = init.slice(); matmulF32Naive(r, a, b, M, N, K, tB, 0, 0, 0, acc);
  const o = init.slice(); matmulF32Wasm(o, a, b, M, N, K, tB, 0, 0, 0, acc);
  for (let i = 0; i < o.length; i++) if (!(Math.abs(o[i] - r[i]) <= 1e-5 * K)) { console.log('BAD', M, N, K, tB, acc, i, o[i], r[i]); process.exit(1); }
}
console.log('ok');
function time(f: () => void) { let best = 1e9; for (let r = 0; r < 10; r++) { const t = performance.now(); f(); best = Math.min(best, performance.now() - t); } return best; }
for (const [M, N, K] of [[1, 2048, 2048], [1, 50257, 128], [256, 768, 768], [512, 2048, 512], [2048, 4096, 256]]) for (const tB of [true, false]) {
  const a = Float32Array.from({ length: M * K }, rnd); const b = allocF32(N * K); b.set(Float32Array.from({ length: N * K }, rnd)); const o = new Float32Array(M * N);
  await startMatmulThreads(2); const t2 = time(() => matmulF32Wasm(o, a, b, M, N, K, tB));
  await startMatmulThreads(1); const t1 = time(() => matmulF32Wasm(o, a, b, M, N, K, tB));
  console.log(M, N, K, tB, '1 thread', (2 * M * N * K / t1 / 1e6).toFixed(1), 'GF/s, 2 threads', (2 * M * N * K / t2 / 1e6).toFixed(1), 'GF/s', (t1 / t2).toFixed(2) + 'x');
}
await stopMatmulThreads();
