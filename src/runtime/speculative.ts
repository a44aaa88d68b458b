// Self-speculative decoding: the same model under a skip or exit policy (the draft) proposes k tokens
// one at a time; the full model scores all of them in one batched pass and keeps the longest prefix it
// agrees with, plus one token of its own. Greedy output is token-for-token the full model's; with
// sampling, the standard acceptance rule (accept d with probability min(1, p(d)/q(d)), else draw from
// max(0, p − q) normalised) makes every token exactly p-distributed. One prompt at a time.
// The draft keeps its own KV cache (its residual differs wherever it skipped), copied from the full
// model's when its prefill is dense anyway; a rejection rolls both caches back by moving their write
// positions (stale entries past a position are never read).

import { KVCache, type Model } from '../model/assemble.ts';
import * as op from '../tensor/api.ts';
import { ContextLengthError, UsageError } from '../util/errors.ts';
import { argmaxRows, policyPass, readOut, sampleAttrs, type Pending } from './generate.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { SkipMeter, type Policy, type PolicySession, type SkippedFraction } from './policies/index.ts';
import { Rng, validateSampling, type SamplingOptions } from './sampling.ts';
import type { OpAttrs } from '../tensor/ops.ts';

export interface SpeculativeOptions {
  maxNewTokens: number;
  /** The draft: the model under this policy (static skips, ffn-skip, block-influence, early-exit). */
  draft: Policy;
  /** Tokens drafted per round (k). */
  draftLength: number;
  sampling?: SamplingOptions;
  /** Default: the model's eos ids. The stop token is included in the output. */
  stopTokens?: number[];
  onToken?: (token: number) => void;
}

export interface SpeculativeResult {
  tokens: number[];
  finish: 'stop' | 'length';
  prefillMs: number;
  decodeMs: number;
  /** Draft tokens proposed and accepted by the full model. */
  drafted: number;
  accepted: number;
  /** accepted / drafted (1 when nothing was drafted). */
  acceptanceRate: number;
  /** Verification passes of the full model (one per round). */
  rounds: number;
  /** Forward passes of the draft. */
  draftPasses: number;
  /** What the draft skipped, over its passes. */
  draftSkipped: SkippedFraction;
}

/**
 * One greedy round recorded whole on a backend that picks tokens on the device: each draft pass reads
 * the previous draft's id there, the verification input [last, d1, …, dk] is joined there too, and the
 * drafts' and the full model's ids come back together (one wait per round). Drafts after a stop token
 * are dropped from the result (a one-at-a-time loop would not have made them); rows of the verification
 * past them change no earlier row (causal attention), and the caller rolls both caches back past them.
 * Runs k draft passes (dpos advances by pending.length + k − 1) and one verification.
 */
async function deviceRound(model: Model, session: PolicySession, meter: SkipMeter, stops: Set<number>,
  r: { pending: number[]; last: number; k: number; draftCache: KVCache; target: KVCache; dpos: number; pos: number }): Promise<{ drafts: number[]; best: Int32Array }> {
  const V = model.spec.vocabSize;
  const outs: Pending[] = [];
  const owned: Tensor[] = [];
  try {
    let from: Int32Array | Tensor = Int32Array.from(r.pending);
    let dpos = r.dpos;
    for (let i = 0; i < r.k; i++) {
      const n = from instanceof Int32Array ? from.length : 1;
      const pass = await policyPass(model, session, meter, 'decode', from, 1, n, { cache: r.draftCache, pos0: [dpos], logitRows: [n - 1] }, n);
      const o = readOut(pass.logits, V, true, true);
      o.values.catch(() => undefined); // awaited below unless a later pass fails first
      outs.push(o);
      dpos += n;
      from = o.ids!;
    }
    let vin = model.backend.upload(Int32Array.of(r.last), [1, 1], 'i32');
    owned.push(vin);
    for (const o of outs) owned.push((vin = op.concat(vin, o.ids!, 1)));
    const ver = await model.forward(vin, 1, outs.length + 1, { cache: r.target, pos0: [r.pos] });
    const best = readOut(ver.logits, V, true, true);
    owned.push(best.ids!);
    const [ds, bs] = await Promise.all([Promise.all(outs.map((o) => o.values)), best.values]);
    const drafts: number[] = [];
    for (const ids of ds) {
      drafts.push(ids[0]);
      if (stops.has(ids[0])) break;
    }
    return { drafts, best: bs as Int32Array };
  } finally {
    for (const t of [...outs.map((o) => o.ids), ...owned]) t?.dispose();
  }
}

/**
 * One sampled round recorded whole, on any backend: each draft pass draws its token with the `sample` op
 * from the previous draft's id where it lies (on a GPU, without a wait); the full model then scores
 * [last, d1, …, dk] in one pass, `accept_draft` decides every drafted row against the draft's logits kept
 * from its pass, and the row after the drafts is sampled for the case that all are accepted. Drafts,
 * decisions and that token come back together: one wait per round. The uniform numbers are taken from
 * rng at the start, in a fixed order (k for the drafts, two per drafted row for the decisions, one for the
 * row after), so a backend's tokens depend only on the seed. Drafts after a stop token are dropped from
 * the result, as in deviceRound.
 */
async function sampledRound(model: Model, session: PolicySession, meter: SkipMeter, stops: Set<number>, attrs: OpAttrs['sample'], rng: Rng,
  r: { pending: number[]; last: number; k: number; draftCache: KVCache; target: KVCache; dpos: number; pos: number }): Promise<{ drafts: number[]; decisions: Int32Array; after: number }> {
  const V = model.spec.vocabSize, be = model.backend, k = r.k;
  const owned: Tensor[] = [];
  const keep = <T extends Tensor>(t: T): T => { owned.push(t); return t; };
  try {
    const uDraft = Array.from({ length: k }, () => keep(be.upload(Float32Array.of(rng.next()), [1], 'f32')));
    const uDecide = keep(be.upload(Float32Array.from({ length: 2 * k }, () => rng.next()), [k, 2], 'f32'));
    const uAfter = keep(be.upload(Float32Array.of(rng.next()), [1], 'f32'));
    let from: Int32Array | Tensor = Int32Array.from(r.pending);
    let dpos = r.dpos;
    let q: Tensor | undefined; // the draft's logits of every drafted row, (i, V)
    let vin = keep(be.upload(Int32Array.of(r.last), [1, 1], 'i32'));
    let ids: Tensor | undefined; // the drafted ids, (1, i)
    for (let i = 0; i < k; i++) {
      const n = from instanceof Int32Array ? from.length : 1;
      const pass = await policyPass(model, session, meter, 'decode', from, 1, n, { cache: r.draftCache, pos0: [dpos], logitRows: [n - 1] }, n);
      const logits = keep(pass.logits.reshape([1, V])); // a view: disposing it frees the pass's logits
      const id = keep(op.sample(logits, uDraft[i], attrs).reshape([1, 1]));
      q = q ? keep(op.concat(q, logits, 0)) : logits;
      vin = keep(op.concat(vin, id, 1));
      ids = ids ? keep(op.concat(ids, id, 1)) : id;
      dpos += n;
      from = id;
    }
    const ver = await model.forward(vin, 1, k + 1, { cache: r.target, pos0: [r.pos] });
    const p = keep(ver.logits.reshape([k + 1, V]));
    const drafted = ids!.reshape([k]);
    const decisions = keep(op.acceptDraft(keep(op.slice(p, 0, 0, k)), q!, drafted, uDecide, attrs));
    const after = keep(op.sample(keep(op.slice(p, 0, k, k + 1)), uAfter, attrs));
    const [ds, dec, af] = await Promise.all([be.read(drafted), be.read(decisions), be.read(after)]);
    const drafts: number[] = [];
    for (const d of ds) {
      drafts.push(d);
      if (stops.has(d)) break;
    }
    return { drafts, decisions: dec as Int32Array, after: af[0] };
  } finally {
    for (const t of new Set(owned)) t.dispose();
  }
}

/** One token drawn by u from a row of logits (…, V) with the `sample` op (readOut's draw); takes the logits. */
async function drawOne(logits: Tensor, V: number, attrs: OpAttrs['sample'], u: number): Promise<number> {
  const out = readOut(logits, V, false, true, { attrs, u: logits.backend.upload(Float32Array.of(u), [1], 'f32') });
  try { return (await out.values)[0]; } finally { out.ids?.dispose(); }
}

/**
 * Generate from one prompt with self-speculative decoding.
 * @example
 *   const draft = await createPolicy(model, 'static:layers.4-7');
 *   const r = await speculativeGenerate(model, ids, { maxNewTokens: 40, draft, draftLength: 4 });
 *   console.log(r.tokens, r.acceptanceRate);
 */
export async function speculativeGenerate(model: Model, prompt: number[], opts: SpeculativeOptions): Promise<SpeculativeResult> {
  const spec = model.spec, V = spec.vocabSize;
  const k = opts.draftLength;
  if (!(Number.isInteger(k) && k >= 1)) throw new UsageError(`draft length must be an integer >= 1, found ${k}`);
  if (!(Number.isInteger(opts.maxNewTokens) && opts.maxNewTokens >= 0)) throw new UsageError(`max new tokens must be an integer >= 0, found ${opts.maxNewTokens}`);
  if (prompt.length === 0) throw new UsageError('the prompt is empty', 'give at least one token (e.g. the BOS token)');
  const P = prompt.length, cap = P + opts.maxNewTokens;
  if (cap > spec.maxContext) throw new ContextLengthError(cap, spec.maxContext, `the prompt (${P} tokens) plus ${opts.maxNewTokens} new tokens`);
  const sampling = opts.sampling ?? { greedy: true };
  validateSampling(sampling);
  const rng = new Rng(sampling.seed ?? 0);
  const stops = new Set(opts.stopTokens ?? spec.eosTokenIds ?? []);
  const meter = new SkipMeter(spec, P + Math.ceil(opts.maxNewTokens / 2));
  const session = opts.draft.session();
  const out: number[] = [];
  let finish: 'stop' | 'length' = 'length';
  let drafted = 0, accepted = 0, rounds = 0, draftPasses = 0;
  const result = (prefillMs: number, decodeMs: number): SpeculativeResult => {
    meter.overheadFlops = session.overheadFlops;
    return { tokens: out, finish, prefillMs, decodeMs, drafted, accepted, acceptanceRate: drafted ? accepted / drafted : 1, rounds, draftPasses, draftSkipped: meter.fraction };
  };
  if (opts.maxNewTokens === 0) return result(0, 0);
  /** Emit a token; true when generation is over. */
  const emit = (t: number): boolean => {
    out.push(t);
    opts.onToken?.(t);
    if (stops.has(t)) { finish = 'stop'; return true; }
    return out.length >= opts.maxNewTokens;
  };

  // Greedy where the backend picks tokens on the device: a whole round is recorded there (deviceRound).
  // Sampled, on every backend: a whole round is recorded with the sampling ops (sampledRound).
  const greedy = sampling.greedy === true;
  const chained = greedy && model.backend.prefersFusion === true;
  const attrs = greedy ? undefined : sampleAttrs(sampling);
  const target = model.newCache(1, cap);
  let draftCache: KVCache | undefined;
  try {
    const t0 = performance.now();
    const ids = Int32Array.from(prompt);
    // When the draft's prefill would run the full model anyway (early exit never exits in a prefill,
    // ffn-skip is still warming up), one prefill serves both: the draft sees it and copies the cache.
    const dplan = session.plan('prefill');
    const shared = !dplan.gate && !dplan.exit && dplan.moeTopK === undefined;
    const pre = await model.forward(ids, 1, P, { cache: target, logitRows: [P - 1], ...(shared && dplan.capture ? { capture: dplan.capture } : {}) });
    let last = attrs ? await drawOne(pre.logits, V, attrs, rng.next()) : (await argmaxRows(pre.logits, V))[0];
    pre.logits.dispose();
    if (shared) {
      await session.observe(pre, { B: 1, T: P, predicted: 1 });
      meter.record(pre, P, { cached: true });
      draftCache = new KVCache(new Map([...target.slots].map(([name, { k, v }]) => [name, { k: op.scale(k, 1), v: op.scale(v, 1) }])), 1, cap);
    } else {
      draftCache = model.newCache(1, cap);
      const dpre = await policyPass(model, session, meter, 'prefill', ids, 1, P, { cache: draftCache, logitRows: [P - 1] }, P);
      dpre.logits.dispose();
      draftPasses++;
    }
    const t1 = performance.now();
    const seq = [...prompt];
    seq.push(last);
    let done = emit(last);
    let pos = P; // target cache holds positions < pos; `last` is not in it yet
    let dpos = P; // same for the draft cache
    while (!done) {
      const kk = Math.min(k, opts.maxNewTokens - out.length);
      const drafts: number[] = [];
      let pending = seq.slice(dpos);
      let n = 0, next = -1;
      if (attrs) {
        // Sampled: accept drafts while accept_draft accepts them; the first rejection brings its residual
        // draw; all accepted, the row after the drafts is the next token.
        const round = await sampledRound(model, session, meter, stops, attrs, rng, { pending, last, k: kk, draftCache: draftCache!, target, dpos, pos });
        drafts.push(...round.drafts);
        draftPasses += kk;
        dpos += pending.length + kk - 1;
        while (n < drafts.length && round.decisions[2 * n] === 1) n++;
        next = n < drafts.length ? round.decisions[2 * n + 1] : round.after;
      } else {
        let best: Int32Array; // the full model's argmax of every verified row
        if (chained) {
          const round = await deviceRound(model, session, meter, stops, { pending, last, k: kk, draftCache: draftCache!, target, dpos, pos });
          drafts.push(...round.drafts);
          best = round.best;
          draftPasses += kk;
          dpos += pending.length + kk - 1;
        } else {
          for (let i = 0; i < kk; i++) {
            const r = await policyPass(model, session, meter, 'decode', Int32Array.from(pending), 1, pending.length,
              { cache: draftCache, pos0: [dpos], logitRows: [pending.length - 1] }, pending.length);
            const d = (await argmaxRows(r.logits, V))[0];
            r.logits.dispose();
            draftPasses++;
            dpos += pending.length;
            drafts.push(d);
            pending = [d];
            if (stops.has(d)) break;
          }
          // The full model scores `last` and every draft in one pass: row i predicts the token after input i.
          const ver = await model.forward(Int32Array.from([last, ...drafts]), 1, drafts.length + 1, { cache: target, pos0: [pos] });
          best = await argmaxRows(ver.logits, V);
          ver.logits.dispose();
        }
        // Greedy: accept drafts while they are the full model's argmax; the first miss is replaced by it.
        while (n < drafts.length && best[n] === drafts[n]) n++;
        next = best[n];
      }
      rounds++;
      drafted += drafts.length;
      accepted += n;
      // Both caches now hold valid entries only for `last` and the accepted drafts.
      pos += n + 1;
      dpos = Math.min(dpos, pos);
      for (const t of [...drafts.slice(0, n), next]) {
        seq.push(t);
        if ((done = emit(t))) break;
      }
      last = next;
    }
    return result(t1 - t0, performance.now() - t1);
  } finally {
    target.dispose();
    draftCache?.dispose();
  }
}
