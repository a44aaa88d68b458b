// Random initialisation of every weight a spec declares (seeded, reproducible): matrices N(0, std),
// norm weights 1, biases 0 — the usual GPT-2/Llama scheme; values are rounded to the requested dtype
// so every backend sees the same numbers. Used for random-weight benchmarks and as
// the starting point of training.

import type { Backend, Tensor } from '../tensor/tensor.ts';
import { fromF32, toF32 } from '../tensor/dtype.ts';
import { Model, declareWeights } from './assemble.ts';
import type { ModelSpec } from './spec.ts';

/** Standard normal draws from a seeded xorshift generator (Box–Muller). */
function normals(seed: number): () => number {
  let s = (seed >>> 0) || 1;
  const u = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

/**
 * A model with random weights for `spec`.
 * @example
 *   const model = randomModel(spec, await getBackend('cpu'), { seed: 1 });
 */
export function randomModel(spec: ModelSpec, backend: Backend, opts: { seed?: number; std?: number; dtype?: 'f32' | 'f16' | 'bf16' } = {}): Model {
  const dt = opts.dtype ?? 'f32';
  // Matrices are stored in `dtype` where the backend computes with it packed (WebGPU); else f32.
  const packed = dt !== 'f32' && backend.supports('matmul', dt) && backend.supports('gather_rows', dt);
  const next = normals(opts.seed ?? 1);
  const std = opts.std ?? 0.02;
  const weights = new Map<string, Tensor>();
  for (const d of declareWeights(spec)) {
    const n = d.shape.reduce((p, x) => p * x, 1);
    const data = new Float32Array(n);
    // Norm scales: layer norms (`.norm`, `.out_norm`), `final_norm`, and attention's q_norm/k_norm/v_norm.
    const isNorm = /(^|\.)(norm|out_norm|final_norm|[qkv]_norm)\.weight$/.test(d.name);
    if (isNorm) data.fill(1);
    else if (!d.name.endsWith('.bias')) for (let i = 0; i < n; i++) data[i] = next() * std;
    if (dt === 'f32') { weights.set(d.name, backend.upload(data, d.shape, 'f32')); continue; }
    const bits = fromF32(data, dt);
    weights.set(d.name, packed && d.shape.length === 2 ? backend.upload(bits, d.shape, dt) : backend.upload(toF32(bits, dt), d.shape, 'f32'));
  }
  return new Model(spec, backend, weights);
}

/** A Llama-shaped spec (RMSNorm, RoPE, GQA, SwiGLU, untied head) from its dimensions. */
export function llamaSpec(d: { vocab: number; width: number; layers: number; heads: number; kvHeads?: number; ffn: number; context?: number }): ModelSpec {
  const headDim = d.width / d.heads;
  return {
    format: 'brickwork.spec', version: 1, family: 'llama',
    vocabSize: d.vocab, dModel: d.width, maxContext: d.context ?? 2048,
    norm: { kind: 'rmsnorm', eps: 1e-5, bias: false }, learnedPositions: false, rope: { theta: 10000 },
    tiedEmbeddings: false, finalNorm: true,
    layers: Array.from({ length: d.layers }, () => ({
      wiring: 'serial' as const, norm: 'pre' as const,
      sublayers: [
        { kind: 'attn' as const, heads: d.heads, kvHeads: d.kvHeads ?? d.heads, headDim, qkvBias: false, outBias: false, rope: true },
        { kind: 'ffn' as const, hidden: d.ffn, gated: true, activation: 'silu' as const, bias: false },
      ],
    })),
  };
}
