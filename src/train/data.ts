// Training data: text files tokenized once into one id stream, split into train and validation, and
// cut into windows of T+1 tokens. Batch i is a pure function of (seed, i) — no generator state — so a
// resumed run draws exactly the batches the uninterrupted run would have drawn.

import type { Batch } from './loss.ts';
import { UsageError } from '../util/errors.ts';

export interface TokenData {
  train: Int32Array;
  val: Int32Array;
}

/**
 * Split one id stream: the validation part is the last `valFraction` (default 10%) unless separate
 * validation ids are given.
 */
export function splitTokens(ids: ArrayLike<number>, opts: { valFraction?: number; val?: ArrayLike<number> } = {}): TokenData {
  const all = Int32Array.from(ids);
  if (opts.val) return { train: all, val: Int32Array.from(opts.val) };
  const f = opts.valFraction ?? 0.1;
  if (!(f > 0 && f < 1)) throw new UsageError(`validation fraction ${f} is not between 0 and 1`, 'use e.g. 0.1');
  const cut = Math.floor(all.length * (1 - f));
  return { train: all.subarray(0, cut), val: all.subarray(cut) };
}

/** A 32-bit mix of integers (splitmix-style), the source of every window offset. */
export function mix(...xs: number[]): number {
  let h = 0x9e3779b9;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return h >>> 0;
}

function checkLength(ids: Int32Array, T: number, what: string): void {
  if (ids.length < T + 1) throw new UsageError(`${what} has ${ids.length} tokens, fewer than one window of ${T + 1} (sequence length ${T} plus its last target)`, 'add more text or lower --seq');
}

/**
 * Training batch number `step`: B windows of T+1 tokens at offsets drawn from (seed, step, row).
 * @example
 *   const batch = trainBatch(data.train, 1234, 0, 8, 128); // { ids, targets, B: 8, T: 128 }
 */
export function trainBatch(ids: Int32Array, seed: number, step: number, B: number, T: number): Batch {
  checkLength(ids, T, 'the training data');
  const span = ids.length - T; // valid starts 0 .. span-1
  const x = new Int32Array(B * T), y = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const start = mix(seed, step, b) % span;
    x.set(ids.subarray(start, start + T), b * T);
    y.set(ids.subarray(start + 1, start + T + 1), b * T);
  }
  return { ids: x, targets: y, B, T };
}

/**
 * The fixed validation batches: up to `maxBatches` batches of B consecutive non-overlapping windows
 * from the start of the validation ids (the same every time, so losses are comparable across steps).
 */
export function valBatches(ids: Int32Array, B: number, T: number, maxBatches: number): Batch[] {
  checkLength(ids, T, 'the validation data');
  const windows = Math.floor((ids.length - 1) / T);
  const out: Batch[] = [];
  for (let w0 = 0; w0 < windows && out.length < maxBatches; w0 += B) {
    const rows = Math.min(B, windows - w0);
    const x = new Int32Array(rows * T), y = new Int32Array(rows * T);
    for (let b = 0; b < rows; b++) {
      const start = (w0 + b) * T;
      x.set(ids.subarray(start, start + T), b * T);
      y.set(ids.subarray(start + 1, start + T + 1), b * T);
    }
    out.push({ ids: x, targets: y, B: rows, T });
  }
  return out;
}
