// Sustained memory read bandwidth, as a decode loop could reach it: the speed limit of matrix-vector work,
// where every weight byte is read once per token (time/token >= weight bytes / bandwidth).
// Sums a buffer much larger than the caches with several independent accumulators, best of a few passes.
// Uses the WASM SIMD kernel when available (what the fast matmul runs), else a JS loop. Takes ~0.5 s.

import { instantiateFastWasm, wasmAvailable } from './matmul.ts';

/** Result of `measureMemoryBandwidth`. `bytes` is the number of bytes read by the best pass. */
export interface BandwidthResult {
  gbPerS: number; // 1e9 bytes per second
  bytes: number;
  method: 'wasm-simd' | 'js';
}

/**
 * Measures sustained read bandwidth by summing `bytes` (default 256 MiB) of f32, best of `repeats` passes.
 *
 * @example
 * const { gbPerS } = measureMemoryBandwidth();
 * const msPerTokenFloor = (weightBytes / (gbPerS * 1e9)) * 1e3;
 */
export function measureMemoryBandwidth(opts: { bytes?: number; repeats?: number } = {}): BandwidthResult {
  const bytes = Math.max(128, Math.floor((opts.bytes ?? 256 * 2 ** 20) / 128) * 128);
  const repeats = Math.max(1, opts.repeats ?? 3);
  let sink = 0;
  let bestMs = Infinity;
  let method: BandwidthResult['method'] = 'js';
  if (wasmAvailable()) {
    method = 'wasm-simd';
    // a memory of its own, so the matmul memory does not keep 256 MiB after this returns
    const mem = new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) });
    const k = instantiateFastWasm(mem);
    // NOTE: fresh pages are all mapped to one zero page until written; reading them would be far too fast.
    new Float32Array(mem.buffer, 0, bytes / 4).fill(1);
    for (let r = 0; r < repeats; r++) {
      const t = performance.now();
      sink += k.sum(0, bytes);
      bestMs = Math.min(bestMs, performance.now() - t);
    }
  } else {
    const x = new Float32Array(bytes / 4).fill(1);
    for (let r = 0; r < repeats; r++) {
      const t = performance.now();
      sink += sumJs(x);
      bestMs = Math.min(bestMs, performance.now() - t);
    }
  }
  // the sum is checked so the engine cannot drop the reads as dead code (f32 lanes: allow rounding)
  const want = (bytes / 4) * repeats;
  if (!(Math.abs(sink - want) <= 1e-3 * want)) throw new Error(`measureMemoryBandwidth: bad sum ${sink}`);
  return { gbPerS: bytes / (bestMs * 1e6), bytes, method };
}

// 8 independent sums: one chain would be bound by add latency, not by memory.
function sumJs(x: Float32Array): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  for (let i = 0; i < x.length; i += 8) {
    s0 += x[i]; s1 += x[i + 1]; s2 += x[i + 2]; s3 += x[i + 3];
    s4 += x[i + 4]; s5 += x[i + 5]; s6 += x[i + 6]; s7 += x[i + 7];
  }
  return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}
