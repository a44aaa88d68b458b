// Fast CPU kernels that replace reference kernels of the same op: blocked/WASM matmul, and an
// attention kernel that works in f32 scratch buffers without per-row allocation. Each one is
// tested against the reference in test/cpu-fast.test.ts; the reference stays the definition.

import type { CpuKernelTable } from '../kernels.ts';
import { matmulF32 } from './matmul.ts';

let scratch = new Float32Array(1024);

export const FAST_KERNELS: Partial<CpuKernelTable> = {
  matmul: (out, [a, b], { transB }, outShape) => {
    const K = a.shape[a.shape.length - 1];
    const M = a.shape[a.shape.length - 2];
    const N = outShape[outShape.length - 1];
    const batches = out.length / (M * N);
    const bBatches = b.data.length / (K * N);
    const A = a.data as Float32Array, Bm = b.data as Float32Array, O = out as Float32Array;
    if (bBatches === 1) {
      // Shared weights: fold the batch into M for one big, better-blocked product.
      matmulF32(O, A, Bm, batches * M, N, K, transB, 0, 0, 0);
      return;
    }
    for (let i = 0; i < batches; i++) matmulF32(O, A, Bm, M, N, K, transB, i * M * K, (i % bBatches) * K * N, i * M * N);
  },

  attention: (out, [q, k, v], { pos0, scale }) => {
    const [B, T, H, D] = q.shape;
    const [, S, K] = k.shape;
    const Q = q.data, Kd = k.data, Vd = v.data;
    const group = H / K;
    if (scratch.length < S) scratch = new Float32Array(S);
    const p = scratch;
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) {
      const visible = pos0[b] + t + 1;
      for (let h = 0; h < H; h++) {
        const kh = (h / group) | 0;
        const qo = ((b * T + t) * H + h) * D;
        let mx = -Infinity;
        for (let s = 0; s < visible; s++) {
          const ko = ((b * S + s) * K + kh) * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += Q[qo + d] * Kd[ko + d];
          const sc = dot * scale;
          p[s] = sc;
          if (sc > mx) mx = sc;
        }
        let z = 0;
        for (let s = 0; s < visible; s++) { const e = Math.exp(p[s] - mx); p[s] = e; z += e; }
        const inv = 1 / z;
        const oo = qo;
        for (let d = 0; d < D; d++) out[oo + d] = 0;
        for (let s = 0; s < visible; s++) {
          const w = p[s] * inv;
          const vo = ((b * S + s) * K + kh) * D;
          for (let d = 0; d < D; d++) out[oo + d] += w * Vd[vo + d];
        }
      }
    }
  },
};
