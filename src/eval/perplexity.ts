// Perplexity as the fixtures define it: the first `maxTokens + 1` ids are cut into consecutive
// windows of `window + 1` tokens that share their boundary token; each window scores its last
// `window` tokens (the final window may be shorter); ppl = exp(total NLL / tokens scored).

import type { Model, SublayerGate } from '../model/assemble.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import { UsageError } from '../util/errors.ts';

export interface PerplexityOptions {
  window?: number;
  /** Score at most this many tokens (default: all). */
  maxTokens?: number;
  /** Windows per forward pass (default: chosen to bound the logits' memory). */
  batch?: number;
  onProgress?: (scored: number, total: number) => void;
  gate?: SublayerGate;
}

export interface PerplexityResult {
  ppl: number;
  nll: number;
  tokensScored: number;
  windows: number;
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
  for (let i = 0; i < starts.length;) {
    // Windows of one pass must share a length; the final, shorter window runs alone.
    const T = Math.min(window, total - starts[i]);
    const group: number[] = [];
    while (group.length < batch && i < starts.length && Math.min(window, total - starts[i]) === T) group.push(starts[i++]);
    const B = group.length;
    const inp = new Int32Array(B * T);
    group.forEach((s, b) => { for (let t = 0; t < T; t++) inp[b * T + t] = ids[s + t]; });
    const { logits } = await model.forward(inp, B, T, { gate: opts.gate });
    const L = await logits.toF32();
    logits.dispose();
    group.forEach((s, b) => {
      for (let t = 0; t < T; t++) {
        const o = (b * T + t) * V;
        let mx = -Infinity;
        for (let v = 0; v < V; v++) if (L[o + v] > mx) mx = L[o + v];
        let z = 0;
        for (let v = 0; v < V; v++) z += Math.exp(L[o + v] - mx);
        nll += mx + Math.log(z) - L[o + ids[s + t + 1]];
      }
    });
    scored += B * T;
    opts.onProgress?.(scored, total);
  }
  return { ppl: Math.exp(nll / scored), nll, tokensScored: scored, windows: starts.length };
}
