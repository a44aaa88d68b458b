// Token sampling: greedy argmax, or temperature → top-k → top-p (nucleus) → draw from a seeded PRNG.
// Follows HF's logits-warper order and conventions: top-k keeps ties at the k-th value out, top-p
// keeps the smallest set whose probability reaches p (always at least one token).

import { UsageError } from '../util/errors.ts';

export interface SamplingOptions {
  /** true: argmax (ties → lowest id, as torch.argmax). */
  greedy?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

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

export function validateSampling(o: SamplingOptions): void {
  if (o.greedy) return;
  if (o.temperature !== undefined && !(o.temperature > 0 && Number.isFinite(o.temperature)))
    throw new UsageError(`temperature must be > 0, found ${o.temperature}`, 'use --greedy for deterministic argmax decoding');
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 1)) throw new UsageError(`top-k must be an integer >= 1, found ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new UsageError(`top-p must be in (0, 1], found ${o.topP}`);
}

/** Index of the largest value (first one on ties). */
export function argmax(x: ArrayLike<number>, off = 0, n = x.length - off): number {
  let best = 0, bv = -Infinity;
  for (let i = 0; i < n; i++) if (x[off + i] > bv) { bv = x[off + i]; best = i; }
  return best;
}

/**
 * The distribution sampling draws from, after temperature, top-k and top-p: (token ids, probabilities).
 * Exposed so speculative decoding and tests can reason about the exact distribution.
 */
export function samplingDistribution(logits: ArrayLike<number>, off: number, V: number, o: SamplingOptions): { ids: Int32Array; probs: Float64Array } {
  const temp = o.temperature ?? 1;
  let ids = Int32Array.from({ length: V }, (_, i) => i);
  const scaled = new Float64Array(V);
  for (let i = 0; i < V; i++) scaled[i] = logits[off + i] / temp;
  if ((o.topK !== undefined && o.topK < V) || (o.topP !== undefined && o.topP < 1)) {
    ids.sort((a, b) => scaled[b] - scaled[a] || a - b);
  }
  let n = V;
  if (o.topK !== undefined && o.topK < V) n = o.topK;
  let probs = softmaxOf(scaled, ids, n);
  if (o.topP !== undefined && o.topP < 1) {
    let cum = 0, keep = 0;
    while (keep < n) { cum += probs[keep]; keep++; if (cum >= o.topP) break; }
    n = keep;
    probs = softmaxOf(scaled, ids, n);
  }
  ids = ids.slice(0, n);
  return { ids, probs };
}

function softmaxOf(scaled: Float64Array, ids: Int32Array, n: number): Float64Array {
  let mx = -Infinity;
  for (let i = 0; i < n; i++) mx = Math.max(mx, scaled[ids[i]]);
  const p = new Float64Array(n);
  let z = 0;
  for (let i = 0; i < n; i++) { p[i] = Math.exp(scaled[ids[i]] - mx); z += p[i]; }
  for (let i = 0; i < n; i++) p[i] /= z;
  return p;
}

/** Draw one token from logits[off .. off+V). */
export function sampleToken(logits: ArrayLike<number>, off: number, V: number, o: SamplingOptions, rng: Rng): number {
  if (o.greedy) return argmax(logits, off, V);
  const { ids, probs } = samplingDistribution(logits, off, V, o);
  return ids[drawIndex(probs, rng)];
}

/** Index drawn from a probability vector. */
export function drawIndex(probs: ArrayLike<number>, rng: Rng): number {
  const u = rng.next();
  let cum = 0;
  for (let i = 0; i < probs.length; i++) { cum += probs[i]; if (u < cum) return i; }
  return probs.length - 1;
}
