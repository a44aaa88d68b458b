// Perplexity as the fixtures define it: the first `maxTokens + 1` ids are cut into consecutive
// windows of `window + 1` tokens that share their boundary token; each window scores its last
// `window` tokens (the final window may be shorter); ppl = exp(total NLL / tokens scored).

import type { Model } from '../model/assemble.ts';
import { policyPass } from '../runtime/generate.ts';
import { SkipMeter, type Policy, type SkippedFraction } from '../runtime/policies/index.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import { NonFiniteError, UsageError } from '../util/errors.ts';

export interface PerplexityOptions {
  window?: number;
  /** Score at most this many tokens (default: all). */
  maxTokens?: number;
  /** Windows per forward pass (default: chosen to bound the logits' memory). */
  batch?: number;
  onProgress?: (scored: number, total: number) => void;
  /**
   * Skip / exit policy. Static ones run batched; per-sequence ones (ffn-skip) score each window's
   * warm-up tokens densely and the rest with the chosen skips; per-token ones (early exit) score one
   * token per pass through a KV cache.
   */
  policy?: Policy;
}

export interface PerplexityResult {
  ppl: number;
  nll: number;
  tokensScored: number;
  windows: number;
  /** Share of the dense sublayer FLOPs the policy skipped. */
  skipped: SkippedFraction;
}

/** Encode long text in consecutive 200,000-character pieces and concatenate the ids (as the fixtures do). */
export function encodeLong(tok: Tokenizer, text: string, piece = 200_000): number[] {
  const ids: number[] = [];
  for (let i = 0; i < text.length; i += piece) for (const id of tok.encode(text.slice(i, i + piece))) ids.push(id);
  return ids;
}

/**
 * Perplexity of a model over token ids.
 * @example
 *   const { ppl } = await perplexity(model, encodeLong(tok, text), { window: 256, maxTokens: 65535 });
 */
export async function perplexity(model: Model, ids: number[], opts: PerplexityOptions = {}): Promise<PerplexityResult> {
  const window = opts.window ?? 256;
  if (!(Number.isInteger(window) && window >= 1)) throw new UsageError(`window must be an integer >= 1, found ${window}`);
  if (window > model.spec.maxContext) throw new UsageError(`window ${window} exceeds the model's context of ${model.spec.maxContext} tokens`, `use --window ${model.spec.maxContext} or less`);
  const total = Math.min(opts.maxTokens ?? Infinity, ids.length - 1);
  if (!(total >= 1)) throw new UsageError(`need at least 2 tokens to score, found ${ids.length}`, 'give a longer text file');
  const V = model.spec.vocabSize;
  const batch = opts.batch ?? Math.max(1, Math.min(16, Math.floor(32_000_000 / (window * V))));
  const starts: number[] = [];
  for (let s = 0; s < total; s += window) starts.push(s);
  let nll = 0, scored = 0;
  const meter = new SkipMeter(model.spec, Math.ceil(window / 2));
  /** Add the NLL of rows [t0, t0 + n) of a window starting at s, from logits (n, V). */
  const score = (L: Float32Array, row0: number, s: number, t0: number, n: number) => {
    for (let t = 0; t < n; t++) {
      const o = (row0 + t) * V;
      let mx = -Infinity;
      for (let v = 0; v < V; v++) if (L[o + v] > mx) mx = L[o + v];
      let z = 0;
      for (let v = 0; v < V; v++) z += Math.exp(L[o + v] - mx);
      const loss = mx + Math.log(z) - L[o + ids[s + t0 + t + 1]];
      if (!Number.isFinite(loss)) throw new NonFiniteError(`the loss of token ${s + t0 + t + 1} (in the window from token ${s}) is ${loss}: the model's logits there are NaN or infinite`);
      nll += loss;
    }
  };
  const policy = opts.policy;
  const batched = !policy || policy.granularity === 'static';
  for (let i = 0; i < starts.length;) {
    // Windows of one pass must share a length; the final, shorter window runs alone.
    const T = Math.min(window, total - starts[i]);
    const group: number[] = [];
    while (group.length < (batched ? batch : 1) && i < starts.length && Math.min(window, total - starts[i]) === T) group.push(starts[i++]);
    const B = group.length;
    const session = policy?.session();
    if (batched) {
      const inp = new Int32Array(B * T);
      group.forEach((s, b) => { for (let t = 0; t < T; t++) inp[b * T + t] = ids[s + t]; });
      const { logits } = await policyPass(model, session, meter, 'prefill', inp, B, T, {}, B * T, undefined, T);
      const L = await logits.toF32();
      logits.dispose();
      group.forEach((s, b) => score(L, b * T, s, 0, T));
    } else {
      // One window through a KV cache in chunks: [warm-up, rest] or one token at a time.
      const s = group[0];
      const chunks = policy.granularity === 'per-token' ? new Array(T).fill(1) : [Math.min(T, policy.warmupTokens), T - Math.min(T, policy.warmupTokens)].filter((n) => n > 0);
      const cache = model.newCache(1, T);
      try {
        let t0 = 0;
        for (const n of chunks) {
          const inp = Int32Array.from(ids.slice(s + t0, s + t0 + n));
          const { logits } = await policyPass(model, session, meter, t0 === 0 && n > 1 ? 'prefill' : 'decode', inp, 1, n, { cache, pos0: [t0] }, n, undefined, n);
          const L = await logits.toF32();
          logits.dispose();
          score(L, 0, s, t0, n);
          t0 += n;
        }
      } finally {
        cache.dispose();
      }
    }
    meter.overheadFlops += session?.overheadFlops ?? 0;
    scored += B * T;
    opts.onProgress?.(scored, total);
  }
  return { ppl: Math.exp(nll / scored), nll, tokensScored: scored, windows: starts.length, skipped: meter.fraction };
}
