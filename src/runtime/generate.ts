// Text generation with a KV cache for a batch of prompts of different lengths. Prompts are
// right-padded into one prefill pass; each row then decodes at its own position (the cache rows past
// a prompt's end hold padding that decoding overwrites before anything reads it).

import type { ForwardOptions, Model } from '../model/assemble.ts';
import { compilePattern } from '../model/points.ts';
import * as op from '../tensor/api.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { SkipMeter, type Policy, type PolicySession, type SkippedFraction } from './policies/index.ts';
import { ContextLengthError, NonFiniteError, UsageError } from '../util/errors.ts';
import type { OpAttrs } from '../tensor/ops.ts';
import { argmax, rowRng, sampleToken, validateSampling, type SamplingOptions } from './sampling.ts';

export interface GenerateOptions {
  maxNewTokens: number;
  sampling?: SamplingOptions;
  /** Token ids that end a row (default: the model's eos ids). The stop token is included in the output. */
  stopTokens?: number[];
  /** Called for every new token as soon as it is chosen. */
  onToken?: (row: number, token: number) => void;
  /** Skip / exit policy (see runtime/policies); dense when absent. */
  policy?: Policy;
  /** Fused sublayers (ForwardOptions.fuse); default: the backend's preference for small passes. */
  fuse?: boolean;
  /**
   * On a backend that picks tokens on the device (WebGPU: the argmax, or the `sample` op's draw): record
   * each step from the ids the previous step left on the device, before they reach the host, so the
   * host's recording overlaps the GPU's work (default true). The tokens are the same; after a stop token
   * one step may run whose output is dropped. Passes whose policy plan captures points or may exit early
   * still wait.
   */
  pipeline?: boolean;
  /**
   * Sampling on a backend that picks tokens on the device: draw there with the `sample` op (default
   * true; the same tokens as the host's draw for the same seed, up to f32 rounding at a boundary), or
   * read the logits back and draw on the host, waiting for every token.
   */
  sampleOnDevice?: boolean;
}

export interface GenerateResult {
  /** New token ids per prompt (stop token included when one ended the row). */
  tokens: number[][];
  /** Why each row ended. */
  finish: ('stop' | 'length')[];
  prefillMs: number;
  decodeMs: number;
  /** Decode steps run (after the prefill's first token). */
  decodeSteps: number;
  /** Share of the dense sublayer FLOPs the policy skipped (all zero when dense). */
  skipped: SkippedFraction;
  /** Sublayers the policy skipped at the end of the run. */
  skipping: string[];
}

/**
 * Generate continuations of token-id prompts.
 * @example
 *   const r = await generate(model, [tok.encode('Once upon a time')], { maxNewTokens: 20, sampling: { greedy: true } });
 */
export async function generate(model: Model, prompts: number[][], opts: GenerateOptions): Promise<GenerateResult> {
  const spec = model.spec;
  const B = prompts.length;
  if (B === 0) throw new UsageError('generate: no prompts given');
  if (!(Number.isInteger(opts.maxNewTokens) && opts.maxNewTokens >= 0)) throw new UsageError(`max new tokens must be an integer >= 0, found ${opts.maxNewTokens}`);
  const sampling = opts.sampling ?? { greedy: true };
  validateSampling(sampling);
  const lens = prompts.map((p) => p.length);
  for (const [i, p] of prompts.entries()) {
    if (p.length === 0) throw new UsageError(`prompt ${i} is empty`, 'give at least one token (e.g. the BOS token)');
    if (p.length + opts.maxNewTokens > spec.maxContext)
      throw new ContextLengthError(p.length + opts.maxNewTokens, spec.maxContext, p.length > spec.maxContext ? `prompt ${i} (${p.length} tokens)` : `prompt ${i} (${p.length} tokens) plus ${opts.maxNewTokens} new tokens`);
  }
  const stops = new Set(opts.stopTokens ?? spec.eosTokenIds ?? []);
  // One random stream per row: a row's draws do not depend on when the others stop (see rowRng).
  const rngs = prompts.map((_, b) => rowRng(sampling.seed ?? 0, b));
  const V = spec.vocabSize;
  const tokens: number[][] = prompts.map(() => []);
  const finish: ('stop' | 'length')[] = prompts.map(() => 'length');
  const done = prompts.map(() => opts.maxNewTokens === 0);
  const Tmax = Math.max(...lens);
  const meter = new SkipMeter(spec, Tmax + Math.ceil(opts.maxNewTokens / 2));
  const session = opts.policy?.session();
  const result = (prefillMs: number, decodeMs: number, decodeSteps: number): GenerateResult => {
    if (session) meter.overheadFlops = session.overheadFlops;
    return { tokens, finish, prefillMs, decodeMs, decodeSteps, skipped: meter.fraction, skipping: [...(session?.skipping ?? [])] };
  };
  if (opts.maxNewTokens === 0) return result(0, 0, 0);

  const cache = model.newCache(B, Tmax + opts.maxNewTokens);
  try {
    const t0 = performance.now();
    const ids = new Int32Array(B * Tmax);
    prompts.forEach((p, b) => ids.set(p, b * Tmax));
    // Where the backend prefers it, tokens are picked on the device (the argmax, or a draw by the `sample`
    // op with each row's next random number) and only ids come back, not B·V logits.
    const greedy = sampling.greedy === true;
    const onDevice = model.backend.prefersFusion === true && (greedy || opts.sampleOnDevice !== false);
    const pipeline = onDevice && opts.pipeline !== false;
    const draw = onDevice && !greedy ? sampleAttrs(sampling) : undefined;
    // Each row's next number for a draw on the device, uploaded before the pass is recorded (an upload
    // submits the work recorded so far): taken for every row, finished or not (a finished row's stream is
    // never read again), so a pass can be recorded before the last one's ids are known.
    const uniforms = () => model.backend.upload(Float32Array.from(rngs, (r) => r.next()), [B], 'f32');
    /** A pass under the policy whose uniforms (if any) are freed should it fail. */
    const pass = async (u: Tensor | undefined, ...a: Parameters<typeof policyPass>) => {
      try { return await policyPass(...a); } catch (e) { u?.dispose(); throw e; }
    };
    const u0 = draw && uniforms();
    const pre = await pass(u0, model, session, meter, 'prefill', ids, B, Tmax, { cache, logitRows: lens.map((l) => l - 1), fuse: opts.fuse }, lens.reduce((p, l) => p + l, 0), (b, t) => t < lens[b]);
    let cur = readOut(pre.logits, V, greedy, onDevice, draw && { attrs: draw, u: u0! });
    let got = await cur.values; // the first new token belongs to the prefill's time
    const t1 = performance.now();
    const pos = [...lens];
    const step = new Int32Array(B);
    // A decode pass: from the host's ids, or from the ids the pass before left on the device.
    let passes = 0;
    const decodePass = async (from: Int32Array | Tensor): Promise<Pending> => {
      const u = draw && uniforms();
      const out = await pass(u, model, session, meter, 'decode', from, B, 1, { cache, pos0: [...pos], logitRows: new Array(B).fill(0), fuse: opts.fuse }, B);
      for (let b = 0; b < B; b++) pos[b]++; // stays below capacity: at most maxNewTokens - 1 passes
      passes++;
      return readOut(out.logits, V, greedy, onDevice, draw && { attrs: draw, u: u! });
    };
    let ahead: Promise<Pending> | undefined;
    let steps = 0;
    try {
      for (;;) {
        for (let b = 0; b < B; b++) {
          if (done[b]) continue;
          const tok = checkedToken(greedy || onDevice ? got[b] : sampleToken(got, b * V, V, sampling, rngs[b]), V, `row ${b}, new token ${tokens[b].length + 1}`);
          tokens[b].push(tok);
          opts.onToken?.(b, tok);
          if (stops.has(tok)) { done[b] = true; finish[b] = 'stop'; }
          else if (tokens[b].length >= opts.maxNewTokens) done[b] = true;
          step[b] = tok;
        }
        if (done.every(Boolean)) {
          // A pass recorded ahead of a stop token: let it finish and drop its output.
          if (ahead) {
            const extra = await ahead;
            ahead = undefined;
            await extra.values;
            extra.ids?.dispose();
          }
          break;
        }
        // Finished rows still ride along (their outputs are ignored) so the batch stays rectangular.
        const next = ahead ? await ahead : await decodePass(step);
        cur.ids?.dispose();
        cur = next;
        steps++;
        // Pipelined: the pass after this one goes to the device before this one's ids are read. A plan
        // that captures or may exit needs its observation (or its exit's readback) first, so it waits.
        ahead = pipeline && cur.ids && passes < opts.maxNewTokens - 1 && passive(session) ? decodePass(cur.ids) : undefined;
        // Awaited below, or in `finally` when this pass fails first.
        ahead?.catch(() => undefined);
        got = await cur.values;
      }
    } finally {
      cur.ids?.dispose();
      // Failed while a pass was recorded ahead: let it settle before the cache goes; the first error is thrown.
      if (ahead) {
        const extra = await ahead.catch(() => undefined);
        await extra?.values.catch(() => undefined);
        extra?.ids?.dispose();
      }
    }
    return result(t1 - t0, performance.now() - t1, steps);
  } finally {
    cache.dispose();
  }
}

/**
 * The argmax of every row of logits (…, V), lowest index on ties: on the device where the backend
 * prefers few, small transfers (WebGPU: one id per row comes back instead of V logits), else on the host.
 */
export async function argmaxRows(logits: Tensor, V: number): Promise<Int32Array> {
  let ids: Int32Array;
  if (logits.backend.prefersFusion) {
    const best = argmaxOnDevice(logits, V);
    ids = (await best.backend.read(best)) as Int32Array;
    best.dispose();
  } else ids = argmaxOnHost(await logits.toF32(), V);
  ids.forEach((id, r) => checkedToken(id, V, `row ${r}`));
  return ids;
}

const argmaxOnDevice = (logits: Tensor, V: number): Tensor => op.topk(logits.reshape([logits.size / V, V]), 1);
/** Each row's argmax, or -1 for a row holding a NaN or no value above −∞ (checkedToken then names it). */
const argmaxOnHost = (L: Float32Array, V: number): Int32Array => Int32Array.from({ length: L.length / V }, (_, r) => argmax(L, r * V, V));

/**
 * A picked token id, checked: -1 (or any id outside the vocabulary) means the logits had no usable
 * values, NaN or −∞ throughout (the host's argmax and the `sample` op give -1 then). `where` names the row.
 * NOTE: the device argmax may not see a NaN (WGSL leaves NaN comparisons to the implementation), so a
 * NaN on WebGPU can go unnoticed there; loading checks every weight is finite, the usual cause.
 */
export function checkedToken(id: number, V: number, where: string): number {
  if (!(Number.isInteger(id) && id >= 0 && id < V))
    throw new NonFiniteError(`the model's logits (${where}) are NaN or infinite, so no token can be picked`);
  return id;
}

/** What a pass hands on: its values on their way to the host and, when picked on the device, the ids there. */
export interface Pending {
  values: Promise<Float32Array | Int32Array>;
  ids?: Tensor;
}

/** The `sample` op's attributes for sampling options (not greedy). */
export const sampleAttrs = (o: SamplingOptions): OpAttrs['sample'] => ({ temperature: o.temperature ?? 1, topK: o.topK ?? 0, topP: o.topP ?? 1 });

/**
 * Start reading a pass's output; takes (disposes) the logits, and draw's uniforms. On the device: the
 * ids, each row's argmax (greedy) or its draw by `draw` (one uniform number per row, (B)). On the host:
 * the argmax when greedy, else the logits.
 */
export function readOut(logits: Tensor, V: number, greedy: boolean, onDevice: boolean, draw?: { attrs: OpAttrs['sample']; u: Tensor }): Pending {
  if (onDevice) {
    let ids: Tensor;
    if (draw) {
      ids = op.sample(logits.reshape([logits.size / V, V]), draw.u, draw.attrs);
      draw.u.dispose();
    } else ids = argmaxOnDevice(logits, V);
    logits.dispose();
    return { values: ids.backend.read(ids) as Promise<Int32Array>, ids };
  }
  const values = logits.toF32().then((L) => {
    logits.dispose();
    return greedy ? argmaxOnHost(L, V) : L;
  });
  return { values };
}

/** Whether the session's next decode plan needs nothing from the pass (no capture, no early exit). */
function passive(session: PolicySession | undefined): boolean {
  if (!session) return true;
  const plan = session.plan('decode');
  return !plan.capture && !plan.exit;
}

/**
 * One forward pass under a policy session: its plan goes into the options, the session sees the
 * result, and the meter records what was skipped over `tokens` positions. Points the caller captures
 * (`fwd.capture`) are joined with the plan's and outlive the session's `observe` (which disposes what its
 * plan captured): a tensor both asked for is copied for the caller first.
 */
export async function policyPass(model: Model, session: PolicySession | undefined, meter: SkipMeter, phase: 'prefill' | 'decode',
  ids: Int32Array | Tensor, B: number, T: number, fwd: ForwardOptions, tokens: number, valid?: (b: number, t: number) => boolean, predicted = 1) {
  const plan = session?.plan(phase) ?? {};
  const mine = fwd.capture ?? [];
  const capture = plan.capture && mine.length ? [...new Set([...mine, ...plan.capture])] : plan.capture ?? fwd.capture;
  const r = await model.forward(ids, B, T, { ...fwd, ...plan, ...(capture ? { capture } : {}) });
  if (session) {
    const copies = new Map<string, Tensor>();
    if (plan.capture && mine.length) {
      const base = (t: Tensor) => t.viewOf ?? t;
      const theirs = plan.capture.map(compilePattern), ours = mine.map(compilePattern);
      const observed = new Set([...r.captured].filter(([name]) => theirs.some((m) => m(name))).map(([, t]) => base(t)));
      for (const [name, t] of r.captured) if (ours.some((m) => m(name)) && observed.has(base(t))) copies.set(name, op.scale(t, 1));
    }
    await session.observe(r, { B, T, predicted, valid });
    for (const [name, t] of copies) r.captured.set(name, t);
  }
  meter.record(r, tokens, { cached: !!fwd.cache, moeTopK: plan.moeTopK });
  return r;
}
