// Self-speculative decoding: the same model under a skip or exit policy (the draft) proposes k tokens
// one at a time; the full model scores all of them in one batched pass and keeps the longest prefix it
// agrees with, plus one token of its own. Greedy output is token-for-token the full model's; with
// sampling, the standard acceptance rule (accept d with probability min(1, p(d)/q(d)), else draw from
// max(0, p − q) normalised) makes every token exactly p-distributed. One prompt at a time.
// Draft and full model share one KV cache (as LayerSkip does): a draft pass reads the full model's
// entries for every verified position and writes its own at the positions it drafts, which the
// verification then overwrites. The layers below the draft's first skipped sublayer (or its early exit)
// ran exactly as the full model runs them, so the verification starts there: it takes those layers'
// KV entries and each draft's residual from the draft passes (Kangaroo and LayerSkip reuse the shallow
// layers the same way). A rejection rolls back by moving the write position (entries past a position
// are never read before being overwritten).

import type { ForwardResult, KVCache, Model } from '../model/assemble.ts';
import type { ModelSpec } from '../model/spec.ts';
import * as op from '../tensor/api.ts';
import { ContextLengthError, UsageError } from '../util/errors.ts';
import { argmaxRows, checkedToken, policyPass, readOut, sampleAttrs, type Pending } from './generate.ts';
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
  /**
   * Start each verification at the first layer the round's drafts did not run exactly, taking the
   * layers below from the draft passes. The tokens are the same either way. It saves the FLOPs of those
   * layers over the drafted rows, which pays where a pass costs its FLOPs (the CPU); a GPU decoding one
   * sequence reads every weight once per pass whatever the rows, so there the split pass saves no
   * weight reads and adds its joins. Default: on where the backend does not prefer fused small passes
   * (the CPU), off on WebGPU.
   */
  reuse?: boolean;
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
  /** Forward passes of the draft (one token each). */
  draftPasses: number;
  /** Layers per verification taken from the draft passes instead of run again, averaged over rounds. */
  reusedLayers: number;
  /** What the draft skipped, over its passes. */
  draftSkipped: SkippedFraction;
}

/** A draft pass: its logits (the caller's), the layers it ran exactly as the full model, and with reuse the residual after each of those. */
interface DraftPass {
  logits: Tensor;
  exact: number;
  posts: Tensor[];
}

/**
 * The layers a draft pass ran exactly as the full model: those below its first skipped sublayer, its
 * early exit, or its first MoE sublayer routed to another top-k.
 */
export function exactLayers(spec: ModelSpec, r: Pick<ForwardResult, 'skipped' | 'exitLayer'>, moeTopK?: number): number {
  let s = r.exitLayer;
  for (const name of r.skipped) s = Math.min(s, Number(name.split('.')[1]));
  if (moeTopK !== undefined) spec.layers.forEach((layer, i) => { if (layer.sublayers.some((x) => x.kind === 'moe' && x.topK !== moeTopK)) s = Math.min(s, i); });
  return s;
}

/** What every round shares: the model, the draft's session and meter, the one cache, and the counts. */
class Rounds {
  passes = 0;
  reused = 0;
  private readonly L: number;
  constructor(readonly model: Model, readonly session: PolicySession, readonly meter: SkipMeter, readonly cache: KVCache, readonly reuse: boolean) {
    this.L = model.spec.layers.length;
  }

  /** One draft pass of one token (host id or device tensor) at position pos. */
  async draft(from: Int32Array | Tensor, pos: number): Promise<DraftPass> {
    const { model, session } = this;
    const moeTopK = session.plan('decode').moeTopK;
    const r = await policyPass(model, session, this.meter, 'decode', from, 1, 1,
      { cache: this.cache, pos0: [pos], logitRows: [0], ...(this.reuse ? { capture: ['layers.*.resid.post'] } : {}) }, 1);
    this.passes++;
    if (!this.reuse) return { logits: r.logits, exact: 0, posts: [] };
    const exact = exactLayers(model.spec, r, moeTopK);
    const posts: Tensor[] = [];
    for (let i = 0; i < exact; i++) posts.push(r.captured.get(`layers.${i}.resid.post`)!);
    // Residuals past the exact layers are not needed. A fully skipped layer hands its input on, so its
    // residual may be one that is kept (dispose itself is safe to repeat).
    const kept = new Set(posts.map((t) => t.viewOf ?? t));
    for (let i = exact; i < this.L; i++) {
      const t = r.captured.get(`layers.${i}.resid.post`);
      if (t && !kept.has(t.viewOf ?? t)) t.dispose();
    }
    return { logits: r.logits, exact, posts };
  }

  /** Frees the residuals the passes kept. */
  release(passes: DraftPass[]): void {
    for (const p of passes) {
      for (const t of p.posts) t.dispose();
      p.posts = [];
    }
  }

  /**
   * The full model's pass over [last, d1, …, dm] at positions pos…pos+m, where passes[i] drafted from
   * row i. With s = the fewest exact layers of those passes: rows 0..m−1 enter at layer s with the
   * residuals the passes left there (they wrote the KV entries below s too), dm first runs the layers
   * below s alone (`Model.prefix`); s = 0 runs the whole pass on `ids()`.
   */
  async verify(pos: number, passes: DraftPass[], lastDraft: Int32Array | Tensor, ids: () => Int32Array | Tensor): Promise<ForwardResult> {
    const { model, cache } = this, m = passes.length;
    const s = Math.min(...passes.map((p) => p.exact));
    this.reused += s;
    if (s === 0) return model.forward(ids(), 1, m + 1, { cache, pos0: [pos] });
    const { resid } = await model.prefix(lastDraft, 1, 1, s, { cache, pos0: [pos + m] });
    const temps = [resid];
    let x = passes[0].posts[s - 1];
    for (const t of [...passes.slice(1).map((p) => p.posts[s - 1]), resid]) temps.push((x = op.concat(x, t, 1)));
    try {
      return await model.forwardFrom(s, x, 1, m + 1, { cache, pos0: [pos] });
    } finally {
      for (const t of temps) t.dispose();
    }
  }
}

/**
 * One greedy round recorded whole on a backend that picks tokens on the device: each draft pass reads
 * the previous draft's id there, the verification input is joined there too, and the drafts' and the
 * full model's ids come back together (one wait per round). Drafts after a stop token are dropped from
 * the result (a one-at-a-time loop would not have made them); rows of the verification past them change
 * no earlier row (causal attention), and the caller rolls the cache back past them.
 */
async function deviceRound(rounds: Rounds, stops: Set<number>, r: { last: number; k: number; pos: number }): Promise<{ drafts: number[]; best: Int32Array }> {
  const model = rounds.model, V = model.spec.vocabSize;
  const outs: Pending[] = [];
  const owned: Tensor[] = [];
  const passes: DraftPass[] = [];
  try {
    let from: Int32Array | Tensor = Int32Array.of(r.last);
    for (let i = 0; i < r.k; i++) {
      const pass = await rounds.draft(from, r.pos + i);
      passes.push(pass);
      const o = readOut(pass.logits, V, true, true);
      o.values.catch(() => undefined); // awaited below unless a later pass fails first
      outs.push(o);
      from = o.ids!;
    }
    const ver = await rounds.verify(r.pos, passes, outs[outs.length - 1].ids!, () => {
      let vin = model.backend.upload(Int32Array.of(r.last), [1, 1], 'i32');
      owned.push(vin);
      for (const o of outs) owned.push((vin = op.concat(vin, o.ids!, 1)));
      return vin;
    });
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
    rounds.release(passes);
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
async function sampledRound(rounds: Rounds, stops: Set<number>, attrs: OpAttrs['sample'], rng: Rng,
  r: { last: number; k: number; pos: number }): Promise<{ drafts: number[]; decisions: Int32Array; after: number }> {
  const model = rounds.model, V = model.spec.vocabSize, be = model.backend, k = r.k;
  const owned: Tensor[] = [];
  const passes: DraftPass[] = [];
  const keep = <T extends Tensor>(t: T): T => { owned.push(t); return t; };
  try {
    const uDraft = Array.from({ length: k }, () => keep(be.upload(Float32Array.of(rng.next()), [1], 'f32')));
    const uDecide = keep(be.upload(Float32Array.from({ length: 2 * k }, () => rng.next()), [k, 2], 'f32'));
    const uAfter = keep(be.upload(Float32Array.of(rng.next()), [1], 'f32'));
    let from: Int32Array | Tensor = Int32Array.of(r.last);
    let q: Tensor | undefined; // the draft's logits of every drafted row, (i, V)
    let ids: Tensor | undefined; // the drafted ids, (1, i)
    for (let i = 0; i < k; i++) {
      const pass = await rounds.draft(from, r.pos + i);
      passes.push(pass);
      const logits = keep(pass.logits.reshape([1, V])); // a view: disposing it frees the pass's logits
      const id = keep(op.sample(logits, uDraft[i], attrs).reshape([1, 1]));
      q = q ? keep(op.concat(q, logits, 0)) : logits;
      ids = ids ? keep(op.concat(ids, id, 1)) : id;
      from = id;
    }
    const ver = await rounds.verify(r.pos, passes, from as Tensor, () => keep(op.concat(keep(be.upload(Int32Array.of(r.last), [1, 1], 'i32')), ids!, 1)));
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
    rounds.release(passes);
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
  let drafted = 0, accepted = 0, roundCount = 0;
  let rounds: Rounds | undefined;
  const result = (prefillMs: number, decodeMs: number): SpeculativeResult => {
    meter.overheadFlops = session.overheadFlops;
    return {
      tokens: out, finish, prefillMs, decodeMs, drafted, accepted, acceptanceRate: drafted ? accepted / drafted : 1, rounds: roundCount,
      draftPasses: rounds?.passes ?? 0, reusedLayers: roundCount ? rounds!.reused / roundCount : 0, draftSkipped: meter.fraction,
    };
  };
  if (opts.maxNewTokens === 0) return result(0, 0);
  /** Emit a token; true when generation is over. */
  const emit = (t: number): boolean => {
    out.push(checkedToken(t, V, `new token ${out.length + 1}`));
    opts.onToken?.(t);
    if (stops.has(t)) { finish = 'stop'; return true; }
    return out.length >= opts.maxNewTokens;
  };

  // Greedy where the backend picks tokens on the device: a whole round is recorded there (deviceRound).
  // Sampled, on every backend: a whole round is recorded with the sampling ops (sampledRound).
  const greedy = sampling.greedy === true;
  const chained = greedy && model.backend.prefersFusion === true;
  const attrs = greedy ? undefined : sampleAttrs(sampling);
  const cache = model.newCache(1, cap);
  try {
    rounds = new Rounds(model, session, meter, cache, opts.reuse ?? model.backend.prefersFusion !== true);
    const t0 = performance.now();
    const ids = Int32Array.from(prompt);
    // The draft never prefills: it reads the full model's cache. Where its own prefill would have run
    // the full model anyway (ffn-skip's warm-up), the draft's session watches this one.
    const dplan = session.plan('prefill');
    const watch = !dplan.gate && !dplan.exit && dplan.moeTopK === undefined;
    const pre = await model.forward(ids, 1, P, { cache, logitRows: [P - 1], ...(watch && dplan.capture ? { capture: dplan.capture } : {}) });
    let last = attrs ? await drawOne(pre.logits, V, attrs, rng.next()) : (await argmaxRows(pre.logits, V))[0];
    pre.logits.dispose();
    if (watch) await session.observe(pre, { B: 1, T: P, predicted: 1 });
    const t1 = performance.now();
    let done = emit(last);
    let pos = P; // the cache holds the full model's entries for positions < pos; `last` is not in it yet
    while (!done) {
      const kk = Math.min(k, opts.maxNewTokens - out.length);
      const drafts: number[] = [];
      let n = 0, next = -1;
      if (attrs) {
        // Sampled: accept drafts while accept_draft accepts them; the first rejection brings its residual
        // draw; all accepted, the row after the drafts is the next token.
        const round = await sampledRound(rounds, stops, attrs, rng, { last, k: kk, pos });
        drafts.push(...round.drafts);
        while (n < drafts.length && round.decisions[2 * n] === 1) n++;
        next = n < drafts.length ? round.decisions[2 * n + 1] : round.after;
      } else {
        let best: Int32Array; // the full model's argmax of every verified row
        if (chained) {
          const round = await deviceRound(rounds, stops, { last, k: kk, pos });
          drafts.push(...round.drafts);
          best = round.best;
        } else {
          const passes: DraftPass[] = [];
          try {
            for (let i = 0; i < kk; i++) {
              const pass = await rounds.draft(Int32Array.of(i ? drafts[i - 1] : last), pos + i);
              passes.push(pass);
              const d = (await argmaxRows(pass.logits, V))[0];
              pass.logits.dispose();
              drafts.push(d);
              if (stops.has(d)) break;
            }
            // The full model scores `last` and every draft in one pass: row i predicts the token after input i.
            const ver = await rounds.verify(pos, passes, Int32Array.of(drafts[drafts.length - 1]), () => Int32Array.from([last, ...drafts]));
            best = await argmaxRows(ver.logits, V);
            ver.logits.dispose();
          } finally {
            rounds.release(passes);
          }
        }
        // Greedy: accept drafts while they are the full model's argmax; the first miss is replaced by it.
        while (n < drafts.length && best[n] === drafts[n]) n++;
        next = best[n];
      }
      roundCount++;
      drafted += drafts.length;
      accepted += n;
      // The cache now holds the full model's entries for `last` and the accepted drafts.
      pos += n + 1;
      for (const t of [...drafts.slice(0, n), next]) if ((done = emit(t))) break;
      last = next;
    }
    return result(t1 - t0, performance.now() - t1);
  } finally {
    cache.dispose();
  }
}
