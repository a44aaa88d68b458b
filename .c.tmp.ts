import { matmulF32Wasm, allocF32 } from './src/backends/cpu/fast/matmul.ts';
function time(f: () => void) { let best = 1e9; for (let r = 0; r < 7; r++) { const t = performance.now(); f(); best = Math.min(best, performance.now() - t); } return best; }
for (const [M, N, K] of [[1, 768, 768], [1, 2048, 2048], [1, 50257, 128], [2, 2048, 2048], [1, 3072, 768], [1, 768, 3072]]) for (const tB of [false]) {
  for (const cold of [false, true]) {
    const copies = cold ? Math.max(2, Math.ceil(128 * 2 ** 20 / (4 * N * K))) : 20;
    const one = allocF32(N * K); one.fill(0.5);
    const bs = cold ? Array.from({ length: copies }, () => { const b = allocF32(N * K); b.fill(0.5); return b; }) : Array(copies).fill(one);
    const a = new Float32Array(M * K).fill(1), o = new Float32Array(M * N);
    const ms = time(() => { for (const b of bs) matmulF32Wasm(o, a, b, M, N, K, tB); }) / copies;
    console.log(M, N, K, tB, cold ? 'cold' : 'hot ', (4 * N * K / ms / 1e6).toFixed(1), 'GB/s');
  }
}
process.exit(0);
