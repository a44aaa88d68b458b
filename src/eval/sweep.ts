// Skip sweeps: for each policy and each setting (a fraction to skip, or an early-exit threshold) the
// perplexity on a text, the FLOPs really skipped, greedy decode speed against the dense model measured
// in the same run, and optionally self-speculative decoding with that setting as the draft (acceptance
// rate, speedup, and whether the output equals dense greedy, which it must).

import type { Model } from '../model/assemble.ts';
import { generate } from '../runtime/generate.ts';
import { createPolicy, type Policy, type SkippedFraction } from '../runtime/policies/index.ts';
import { speculativeGenerate } from '../runtime/speculative.ts';
import { UsageError } from '../util/errors.ts';
import { perplexity } from './perplexity.ts';

/** Policies a sweep can vary, with the settings tried by default. */
export const SWEEP_DEFAULTS: Record<string, number[]> = {
  'ffn-skip': [0.125, 0.25, 0.375, 0.5],
  'block-influence': [0.125, 0.25, 0.375, 0.5],
  'early-exit': [0.95, 0.9, 0.8, 0.6, 0.4],
};

export interface SweepOptions {
  /** Policy kinds to sweep (keys of SWEEP_DEFAULTS). */
  policies: string[];
  /** Settings per policy kind (default SWEEP_DEFAULTS). */
  values?: Record<string, number[]>;
  /** Extra `key=value` options appended to every spec of a kind, e.g. { 'ffn-skip': 'warmup=16' }. */
  extra?: Record<string, string>;
  /** Token ids to score, windowing as `perplexity` does. */
  ids: number[];
  window: number;
  maxTokens?: number;
  /** Calibration ids for block-influence. */
  calibration?: number[];
  /** Greedy decode speed: generate `genTokens` tokens after `prompt`. */
  prompt: number[];
  genTokens: number;
  /** Also decode self-speculatively with each setting as the draft. */
  speculative?: { draftLength: number };
  onStep?: (label: string) => void;
}

export interface SweepRow {
  policy: string;
  /** The setting (fraction or threshold); 0 for the dense row. */
  value: number;
  spec: string;
  /** What the policy did on this model, in one line. */
  plan: string;
  /** Skipped share of the sublayer FLOPs while scoring the text. */
  skipped: SkippedFraction;
  ppl: number;
  /** Greedy decode speed, and dense decode speed measured alternately with it, and their ratio. */
  decodeTokensPerSecond: number;
  denseTokensPerSecond: number;
  speedup: number;
  speculative?: {
    acceptanceRate: number; tokensPerSecond: number; denseTokensPerSecond: number; speedup: number; identical: boolean;
    /** Layers per round that verification took from the draft passes instead of running them again. */
    reusedLayers: number;
  };
}

export interface SweepResult {
  tokensScored: number;
  dense: SweepRow;
  rows: SweepRow[];
}

type Timed = () => Promise<{ decodeSteps: number; decodeMs: number }>;

/**
 * Decode tokens per second of `run` and of the dense `base`, each the best of three runs taken
 * alternately, so both see the same machine state (a ratio from runs minutes apart would not).
 */
async function decodeRates(run: Timed, base: Timed): Promise<[number, number]> {
  const best = [0, 0];
  for (let i = 0; i < 3; i++) {
    for (const [j, f] of [run, base].entries()) {
      const r = await f();
      if (r.decodeSteps > 0) best[j] = Math.max(best[j], r.decodeSteps / (r.decodeMs / 1000));
    }
  }
  return [best[0], best[1]];
}

/**
 * Run a sweep.
 * @example
 *   const r = await sweep(model, { policies: ['ffn-skip'], ids, window: 256, prompt: ids.slice(0, 32), genTokens: 64 });
 */
export async function sweep(model: Model, o: SweepOptions): Promise<SweepResult> {
  for (const p of o.policies) if (!(p in SWEEP_DEFAULTS)) throw new UsageError(`cannot sweep policy '${p}'`, `sweep one of: ${Object.keys(SWEEP_DEFAULTS).join(', ')}`);
  if (o.prompt.length === 0) throw new UsageError('the sweep needs a non-empty prompt for the speed measurement');
  // Every setting is built before any is measured, so a spec that does not parse or fit the model stops
  // the sweep at once rather than after the settings before it.
  const settings: { policy: string; value: number; spec: string; pol: Policy }[] = [];
  for (const p of o.policies) {
    for (const v of o.values?.[p] ?? SWEEP_DEFAULTS[p]) {
      const extra = o.extra?.[p];
      const spec = `${p}:${v}${extra ? `,${extra}` : ''}`;
      if (p === 'block-influence') o.onStep?.(`${spec}: calibrating`);
      settings.push({ policy: p, value: v, spec, pol: await createPolicy(model, spec, { calibration: o.calibration, ctxLen: Math.ceil(o.window / 2) }) });
    }
  }
  const gen = { maxNewTokens: o.genTokens, stopTokens: [] as number[] };
  const denseTokens = (await generate(model, [o.prompt], gen)).tokens[0];
  await generate(model, [o.prompt], gen); // warm-up, so the dense row is not measured cold

  let tokensScored = 0;
  const denseRun: Timed = () => generate(model, [o.prompt], gen);
  const evaluate = async (policy: string, value: number, spec: string, pol: Policy): Promise<SweepRow> => {
    o.onStep?.(`${spec}: perplexity`);
    const pp = await perplexity(model, o.ids, { window: o.window, maxTokens: o.maxTokens, policy: pol });
    tokensScored = pp.tokensScored;
    o.onStep?.(`${spec}: decode speed`);
    const [rate, denseRate] = await decodeRates(() => generate(model, [o.prompt], { ...gen, policy: pol }), denseRun);
    const row: SweepRow = {
      policy, value, spec, plan: pol.describe(), skipped: pp.skipped, ppl: pp.ppl,
      decodeTokensPerSecond: rate, denseTokensPerSecond: denseRate, speedup: rate / denseRate,
    };
    if (o.speculative && policy !== 'dense') {
      o.onStep?.(`${spec}: speculative decoding`);
      let last: Awaited<ReturnType<typeof speculativeGenerate>> | undefined;
      const [specRate, denseRate2] = await decodeRates(async () => {
        last = await speculativeGenerate(model, o.prompt, { ...gen, draft: pol, draftLength: o.speculative!.draftLength });
        // Count the same decode span as dense: every token after the first.
        return { decodeSteps: last.tokens.length - 1, decodeMs: last.decodeMs };
      }, denseRun);
      row.speculative = {
        acceptanceRate: last!.acceptanceRate, tokensPerSecond: specRate, denseTokensPerSecond: denseRate2, speedup: specRate / denseRate2, reusedLayers: last!.reusedLayers,
        identical: last!.tokens.length === denseTokens.length && last!.tokens.every((t, i) => t === denseTokens[i]),
      };
    }
    return row;
  };

  const dense = await evaluate('dense', 0, 'dense', await createPolicy(model, 'dense'));
  const rows: SweepRow[] = [];
  for (const x of settings) rows.push(await evaluate(x.policy, x.value, x.spec, x.pol));
  return { tokensScored, dense, rows };
}
