// Token sampling on the host: greedy argmax, or a draw from the distribution after temperature, top-k
// and top-p (defined in tensor/sampling.ts, which the `sample` op shares) with a seeded PRNG.

import { argmax, drawToken, type SamplingOptions } from '../tensor/sampling.ts';

export { acceptDraft, acceptOrResample, argmax, drawToken, referenceSamplingDistribution, samplingDistribution, validateSampling, type SamplingOptions } from '../tensor/sampling.ts';

/** A small, fast, seedable PRNG (xoshiro128**); `next()` is uniform in [0, 1). */
export class Rng {
  private s = new Uint32Array(4);
  constructor(seed: number) {
    // splitmix32 expands the seed into the 128-bit state.
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }
  next(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r / 4294967296;
  }
}
const rotl = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;

/**
 * The generator of row b of a batch sampled with `seed`: one stream per row, so that a row's tokens do
 * not depend on when the other rows stop, and a device can be handed every row's next number before
 * the host knows which rows are still running. Row 0 uses the seed itself.
 */
export const rowRng = (seed: number, b: number): Rng => new Rng((seed + Math.imul(b, 0x2545f491)) >>> 0);

/** Draw one token from logits[off .. off+V) (one number from `rng` unless greedy). */
export function sampleToken(logits: ArrayLike<number>, off: number, V: number, o: SamplingOptions, rng: Rng): number {
  if (o.greedy) return argmax(logits, off, V);
  return drawToken(logits, off, V, o, rng.next());
}

/** Index drawn from a probability vector. */
export function drawIndex(probs: ArrayLike<number>, rng: Rng): number {
  const u = rng.next();
  let cum = 0;
  for (let i = 0; i < probs.length; i++) { cum += probs[i]; if (u < cum) return i; }
  return probs.length - 1;
}
