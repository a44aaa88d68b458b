// Positions: rotary inverse frequencies (with linear and Llama-3 scaling, as HF computes them) and
// the learned absolute position table's declaration.

import type { ModelSpec, RopeSpec } from '../model/spec.ts';

/** Inverse frequencies for rotating `dim` dims: theta^(-2i/dim), i < dim/2, then scaled. */
export function ropeInvFreq(rope: RopeSpec, headDim: number): number[] {
  const dim = rope.dim ?? headDim;
  const inv: number[] = [];
  // NOTE: HF builds inv_freq in f32 from an int64 arange; rounding to f32 here matches it.
  for (let i = 0; i < dim; i += 2) inv.push(Math.fround(1 / Math.fround(rope.theta ** Math.fround(i / dim))));
  const sc = rope.scaling;
  if (!sc) return inv;
  if (sc.type === 'linear') return inv.map((f) => Math.fround(f / sc.factor));
  // Llama 3: leave high frequencies, divide low ones by `factor`, blend in between.
  const lowWl = sc.originalMaxPositions / sc.lowFreqFactor;
  const highWl = sc.originalMaxPositions / sc.highFreqFactor;
  return inv.map((f) => {
    const wl = (2 * Math.PI) / f;
    if (wl < highWl) return f;
    if (wl > lowWl) return Math.fround(f / sc.factor);
    const smooth = (sc.originalMaxPositions / wl - sc.lowFreqFactor) / (sc.highFreqFactor - sc.lowFreqFactor);
    return Math.fround((1 - smooth) * (f / sc.factor) + smooth * f);
  });
}

/** The head dim rotary embeddings apply to (the first attention sublayer that uses rope). */
export function ropeHeadDim(spec: ModelSpec): number | undefined {
  for (const l of spec.layers) for (const s of l.sublayers) if (s.kind === 'attn' && s.rope) return s.headDim;
  return undefined;
}
