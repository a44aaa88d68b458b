// The distribution a sampled token is drawn from: temperature → top-k → top-p (nucleus), in HF's
// logits-warper order. Top-k keeps exactly k tokens, ties at the k-th value broken by lower id (HF's
// warper keeps every token tied with the k-th); top-p keeps the smallest set whose probability reaches
// p, always at least one token. Also the draw itself given a uniform number: the definition of the
// `sample` op (its CPU kernel), which runtime/sampling.ts uses on the host with its seeded generator.

import { UsageError } from '../util/errors.ts';

export interface SamplingOptions {
  /** true: argmax (ties → lowest id, as torch.argmax). */
  greedy?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

export function validateSampling(o: SamplingOptions): void {
  if (o.greedy) return;
  if (o.temperature !== undefined && !(o.temperature > 0 && Number.isFinite(o.temperature)))
    throw new UsageError(`temperature must be > 0, found ${o.temperature}`, 'use --greedy for deterministic argmax decoding');
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 1)) throw new UsageError(`top-k must be an integer >= 1, found ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new UsageError(`top-p must be in (0, 1], found ${o.topP}`);
}

/**
 * Index of the largest value (first one on ties); -1 when the values hold a NaN or nothing above −∞,
 * so that no token is made up from logits without numbers (the runtime names it as an error).
 */
export function argmax(x: ArrayLike<number>, off = 0, n = x.length - off): number {
  let best = -1, bv = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = x[off + i];
    if (v > bv) { bv = v; best = i; } else if (v !== v) return -1;
  }
  return best;
}

/**
 * The distribution sampling draws from, after temperature, top-k and top-p: (token ids, probabilities).
 * Exposed so speculative decoding and tests can reason about the exact distribution. Without top-k or
 * top-p the ids are in vocabulary order; with either, in order of decreasing logit (ties: lower id
 * first), and only the leading candidates are sorted, not the whole vocabulary.
 */
export function samplingDistribution(logits: ArrayLike<number>, off: number, V: number, o: SamplingOptions): { ids: Int32Array; probs: Float64Array } {
  const temp = o.temperature ?? 1;
  const scaled = new Float64Array(V);
  for (let i = 0; i < V; i++) scaled[i] = logits[off + i] / temp;
  // Sorting uses the logits' f32 bits as keys where it can (same order as `scaled`: temp > 0).
  const src = logits instanceof Float32Array ? logits.subarray(off, off + V) : undefined;
  const cutK = o.topK !== undefined && o.topK < V;
  const cutP = o.topP !== undefined && o.topP < 1;
  if (!cutK && !cutP) {
    const ids = new Int32Array(V);
    for (let i = 0; i < V; i++) ids[i] = i;
    return { ids, probs: softmaxOf(scaled, ids, V) };
  }
  if (cutK) {
    const ids = topIds(scaled, o.topK!, src);
    const probs = softmaxOf(scaled, ids, ids.length);
    return cutP ? nucleus(scaled, ids, probs, o.topP!) : { ids, probs };
  }
  // top-p alone: the probabilities are over the whole vocabulary. A histogram of the probabilities by
  // log-ratio to the largest finds the bucket where the running mass reaches p; only the tokens in it
  // and above are sorted (every token below is strictly less likely than all of those).
  let mx = -Infinity;
  for (let i = 0; i < V; i++) if (scaled[i] > mx) mx = scaled[i];
  const e = new Float64Array(V);
  let z = 0;
  for (let i = 0; i < V; i++) { e[i] = Math.exp(scaled[i] - mx); z += e[i]; }
  const mass = new Float64Array(BUCKETS);
  for (let i = 0; i < V; i++) { const bk = (mx - scaled[i]) * PER_UNIT; if (bk < BUCKETS) mass[bk | 0] += e[i]; }
  let cut = BUCKETS, acc = 0;
  for (let bk = 0; bk < BUCKETS; bk++) { acc += mass[bk]; if (acc >= o.topP! * z) { cut = bk; break; } }
  let ids: Int32Array;
  if (cut < BUCKETS) {
    let n = 0;
    const cand = new Int32Array(V);
    for (let i = 0; i < V; i++) if ((mx - scaled[i]) * PER_UNIT < cut + 1) cand[n++] = i;
    ids = topIds(scaled, n, src, cand.subarray(0, n));
  } else {
    ids = topIds(scaled, V, src);
  }
  // The shortest prefix of ids whose probability reaches p, or 0 where it falls short.
  const reach = (ids: Int32Array) => {
    let cum = 0;
    for (let i = 0; i < ids.length; i++) { cum += e[ids[i]] / z; if (cum >= o.topP!) return i + 1; }
    return 0;
  };
  let keep = reach(ids);
  // Rounding (sums in another order) can leave the candidates just short of p: then take the full order.
  if (!keep && ids.length < V) keep = reach((ids = topIds(scaled, V, src)));
  keep ||= V;
  return { ids: ids.slice(0, keep), probs: softmaxOf(scaled, ids, keep) };
}

/** The top-p histogram: buckets of 1/PER_UNIT in log-probability below the most likely token. */
const PER_UNIT = 32;
const BUCKETS = 64 * PER_UNIT;

/**
 * The definition samplingDistribution implements, written down directly: sort the whole vocabulary
 * (only when top-k or top-p cut it), keep k, then the shortest prefix reaching p. Tests and
 * bench/sampling.ts compare against it; it sorts V ids per token, so decoding does not use it.
 */
export function referenceSamplingDistribution(logits: ArrayLike<number>, off: number, V: number, o: SamplingOptions): { ids: Int32Array; probs: Float64Array } {
  const scaled = new Float64Array(V);
  for (let i = 0; i < V; i++) scaled[i] = logits[off + i] / (o.temperature ?? 1);
  const ids = new Int32Array(V);
  for (let i = 0; i < V; i++) ids[i] = i;
  const cutK = o.topK !== undefined && o.topK < V, cutP = o.topP !== undefined && o.topP < 1;
  if (cutK || cutP) ids.sort((a, b) => scaled[b] - scaled[a] || a - b);
  const n = cutK ? o.topK! : V;
  const probs = softmaxOf(scaled, ids, n);
  return cutP ? nucleus(scaled, ids.slice(0, n), probs, o.topP!) : { ids: ids.slice(0, n), probs };
}

/** top-p within the top-k candidates (sorted, with their probabilities): the shortest prefix reaching p. */
function nucleus(scaled: Float64Array, ids: Int32Array, probs: Float64Array, p: number): { ids: Int32Array; probs: Float64Array } {
  let cum = 0, keep = 0;
  while (keep < ids.length) { cum += probs[keep]; keep++; if (cum >= p) break; }
  return { ids: ids.slice(0, keep), probs: softmaxOf(scaled, ids, keep) };
}

/** Descending by value, then ascending by id. NaN sorts last. */
const before = (x: Float64Array, a: number, b: number): boolean => {
  const va = x[a], vb = x[b];
  if (va > vb || (vb !== vb && va === va)) return true; // vb NaN, va not
  return va === vb ? a < b : false;
};

/**
 * The m ids with the largest values, sorted (descending; ties: lower id first; NaN last), from all ids of
 * x or from `among` (which may be reordered): a histogram of the values finds the bucket holding the m-th largest, and only the
 * ids in it and above are sorted (every id below is strictly smaller than all of them). `src`, when
 * given, holds f32 values in the same order as x (the logits x was scaled from): the sort then runs
 * natively on keys packed from their bits and the id.
 */
export function topIds(x: Float64Array, m: number, src?: Float32Array, among?: Int32Array): Int32Array {
  let ids: Int32Array;
  if (among) ids = among;
  else {
    ids = new Int32Array(x.length);
    for (let i = 0; i < x.length; i++) ids[i] = i;
  }
  const V = ids.length;
  m = Math.max(0, Math.min(m, V));
  let top = ids;
  if (4 * m < V) {
    let lo = Infinity, hi = -Infinity, numbers = 0;
    for (let i = 0; i < V; i++) {
      const v = x[ids[i]];
      if (v === v) numbers++;
      if (v > -Infinity && v < Infinity) { if (v < lo) lo = v; if (v > hi) hi = v; }
    }
    if (numbers >= m && hi > lo && Number.isFinite(hi - lo)) {
      // Bucket b(v) rises with v (−∞ in the first bucket, +∞ in the last), so b(u) < b(v) means u < v.
      const scale = TOP_BUCKETS / (hi - lo);
      const bucket = (v: number) => (v >= hi ? TOP_BUCKETS - 1 : v <= lo ? 0 : Math.min(TOP_BUCKETS - 1, Math.floor((v - lo) * scale)));
      const count = new Int32Array(TOP_BUCKETS);
      for (let i = 0; i < V; i++) { const v = x[ids[i]]; if (v === v) count[bucket(v)]++; }
      let cut = TOP_BUCKETS - 1;
      for (let n = count[cut]; n < m; n += count[cut]) cut--;
      const cand = new Int32Array(V);
      let n = 0;
      for (let i = 0; i < V; i++) { const v = x[ids[i]]; if (v === v && bucket(v) >= cut) cand[n++] = ids[i]; }
      top = cand.subarray(0, n);
    }
  }
  if (src && x.length <= PACK_IDS) sortPacked(top, src);
  else top.sort((a, b) => (before(x, a, b) ? -1 : before(x, b, a) ? 1 : 0));
  return top.slice(0, m);
}

/** Buckets of topIds' value histogram. */
const TOP_BUCKETS = 4096;

/** Ids below this fit beside a 32-bit value key in a float64's 53-bit integer range. */
const PACK_IDS = 2 ** 21;
const f32bits = new Uint32Array(1);
const f32view = new Float32Array(f32bits.buffer);

/** Sorts ids by src[id] descending, ties by id, NaN last: one native sort of keys (value rank · 2^21 + id). */
function sortPacked(ids: Int32Array, src: Float32Array): void {
  const keys = new Float64Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const v = src[ids[i]];
    let rank: number; // 0 for the largest value; NaN after everything
    if (v !== v) rank = 2 ** 32 - 1;
    else {
      f32view[0] = v === 0 ? 0 : v; // -0 ranks with +0, as the comparison does
      const b = f32bits[0];
      const ordered = b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0; // ascending with the value
      rank = 2 ** 32 - 2 - ordered;
    }
    keys[i] = rank * PACK_IDS + ids[i];
  }
  keys.sort();
  for (let i = 0; i < ids.length; i++) ids[i] = keys[i] % PACK_IDS;
}

/** Softmax over scaled[ids[0..n)], in that order. */
function softmaxOf(scaled: Float64Array, ids: Int32Array, n: number): Float64Array {
  let mx = -Infinity;
  for (let i = 0; i < n; i++) mx = Math.max(mx, scaled[ids[i]]);
  const p = new Float64Array(n);
  let z = 0;
  for (let i = 0; i < n; i++) { p[i] = Math.exp(scaled[ids[i]] - mx); z += p[i]; }
  for (let i = 0; i < n; i++) p[i] /= z;
  return p;
}

/**
 * The token drawn from logits[off .. off+V) by a uniform number u in [0, 1): the ids samplingDistribution
 * keeps, walked in vocabulary order (as torch.multinomial walks HF's masked probabilities), the first at
 * which the running probability passes u; the last id with probability > 0 when rounding leaves u above
 * the total (a token of probability 0, such as one whose logit is −∞, is never drawn). The
 * order of the walk does not change the distribution; vocabulary order lets a GPU draw without sorting.
 */
export function drawToken(logits: ArrayLike<number>, off: number, V: number, o: SamplingOptions, u: number): number {
  const { ids, probs } = samplingDistribution(logits, off, V, o);
  let order: Int32Array | undefined; // positions of ids in ascending id order, when they are not already
  for (let i = 1; i < ids.length && !order; i++) if (ids[i] < ids[i - 1]) order = Int32Array.from(ids.keys()).sort((a, b) => ids[a] - ids[b]);
  let cum = 0, last = -1;
  for (let j = 0; j < ids.length; j++) {
    const at = order ? order[j] : j;
    if (!(probs[at] > 0)) continue;
    cum += probs[at];
    last = ids[at];
    if (u < cum) return last;
  }
  return last;
}

/** The sampling options the `sample` and `accept_draft` ops' attributes stand for (0: no top-k, 1: no top-p). */
export const optionsOfAttrs = (a: { temperature: number; topK: number; topP: number }): SamplingOptions =>
  ({ temperature: a.temperature, topK: a.topK > 0 ? a.topK : undefined, topP: a.topP < 1 ? a.topP : undefined });

/** samplingDistribution as a dense vector over the vocabulary (0 for the tokens it drops). */
export function denseDistribution(logits: ArrayLike<number>, off: number, V: number, o: SamplingOptions): Float64Array {
  const p = new Float64Array(V);
  const { ids, probs } = samplingDistribution(logits, off, V, o);
  for (let i = 0; i < ids.length; i++) p[ids[i]] = probs[i];
  return p;
}

/**
 * One decision of speculative sampling for a token d the draft drew from q, where the target's
 * distribution is p (dense probability vectors over the vocabulary): d is accepted when q(d) > 0 and
 * ua · q(d) < p(d), which has probability min(1, p(d) / q(d)); otherwise the token is drawn by ur from the
 * residual max(0, p − q), walked in vocabulary order (the first token at which the running residual
 * passes ur times its total), or from p itself should rounding leave the residual empty (it is empty only
 * when p = q, where rejection has probability 0). Either way the token is p-distributed. The definition of
 * the `accept_draft` op, with ua and ur its two uniform numbers in [0, 1).
 */
export function acceptOrResample(p: ArrayLike<number>, q: ArrayLike<number>, d: number, ua: number, ur: number): { token: number; accepted: boolean } {
  if (q[d] > 0 && ua * q[d] < p[d]) return { token: d, accepted: true };
  let z = 0, zp = 0;
  for (let i = 0; i < p.length; i++) { z += Math.max(0, p[i] - q[i]); zp += p[i]; }
  const fromP = !(z > 0);
  const at = ur * (fromP ? zp : z);
  let cum = 0, last = -1;
  for (let i = 0; i < p.length; i++) {
    const w = fromP ? p[i] : Math.max(0, p[i] - q[i]);
    if (!(w > 0)) continue;
    cum += w;
    last = i;
    if (at < cum) return { token: i, accepted: false };
  }
  return { token: last, accepted: false }; // rounding left ur · z above the total: the last token with weight
}

/**
 * acceptOrResample on logits: p and q are the sampling distributions (options o) of the target's and the
 * draft's logits at the same offset.
 */
export function acceptDraft(target: ArrayLike<number>, draft: ArrayLike<number>, off: number, V: number, o: SamplingOptions,
  d: number, ua: number, ur: number): { token: number; accepted: boolean } {
  if (!(Number.isInteger(d) && d >= 0 && d < V)) throw new RangeError(`accept_draft: drafted token ${d} outside the vocabulary 0..${V - 1}`);
  return acceptOrResample(denseDistribution(target, off, V, o), denseDistribution(draft, off, V, o), d, ua, ur);
}
