// `brickwork generate`: continue a text prompt, streaming the decoded text to stdout as tokens arrive
// and a timing line to stderr; `--json` prints one JSON object instead. Also exports the streaming
// and stats helpers the demo reuses. Batch size 1 only; a stop token ends the row but is not printed.

import { randomInt } from 'node:crypto';
import { Command, Option } from 'commander';
import { ContextLengthError, generate, speculativeGenerate, UsageError, WebGpuBackend, type GenerateResult, type Model, type Policy, type SamplingOptions, type Tokenizer } from '../index.ts';
import { calibOption, deviceOption, floatArg, idListArg, intArg, seedArg, loadWithTokenizer, modelOption, POLICY_HELP, policyFromFlags, resolveDevice, type Device } from './common.ts';
import { fmtDuration, fmtFixed, fmtInt, fmtRate, profileTable, skippedText } from './format.ts';

/** Prompt ids decoded with the new ones, so that a decoder's start-of-text rules apply to the prompt. */
const CONTEXT_IDS = 8;

/**
 * The text of `ids` as it continues `context`: decode(context + ids) less decode(context), as transformers'
 * text-generation pipeline cuts the prompt off. Decoding `ids` alone would lose the space a SentencePiece
 * (Metaspace) decoder strips from the first token of a text, joining the prompt and its continuation.
 */
export function continuation(tok: Tokenizer, context: number[], ids: number[], contextText?: string): string {
  // NOTE: @huggingface/tokenizers throws on an empty id list rather than returning ''.
  if (ids.length === 0) return '';
  if (context.length === 0) return tok.decode(ids);
  const before = contextText ?? tok.decode(context);
  const full = tok.decode([...context, ...ids]);
  return full.startsWith(before) ? full.slice(before.length) : tok.decode(ids);
}

/**
 * Turns a growing list of token ids into text deltas. It re-decodes the whole list each time (decoding
 * token by token would split multi-byte characters and drop the spaces some tokenizers add between
 * tokens) and holds back a trailing U+FFFD: that is an incomplete UTF-8 sequence the next token completes.
 */
export class TextStream {
  private ids: number[] = [];
  private shown = '';
  private readonly context: number[];
  private readonly contextText: string;
  /** `prompt`: the ids before the stream (their last few are decoded with it, then cut off). */
  constructor(private readonly tok: Tokenizer, prompt: number[] = []) {
    this.context = prompt.slice(-CONTEXT_IDS);
    this.contextText = this.context.length ? tok.decode(this.context) : '';
  }

  private decode(): string {
    return continuation(this.tok, this.context, this.ids, this.contextText);
  }

  /** Add a token; returns the text that can be printed now (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    const full = this.decode();
    const ready = full.replace(/\uFFFD+$/, '');
    return this.advance(ready);
  }

  /** Everything not yet returned, replacement characters included (the sequence really ended there). */
  flush(): string {
    return this.advance(this.decode());
  }

  private advance(text: string): string {
    // NOTE: if a later token changed earlier text (rare: a decoder merging across tokens), what was
    // printed cannot be taken back; continue after the longest common prefix's end.
    let common = 0;
    const n = Math.min(text.length, this.shown.length);
    while (common < n && text.charCodeAt(common) === this.shown.charCodeAt(common)) common++;
    const start = Math.max(common, this.shown.length);
    const delta = text.length > start ? text.slice(start) : '';
    if (text.length >= this.shown.length) this.shown = text;
    return delta;
  }
}

export interface GenerationRun {
  promptIds: number[];
  /** New ids, the stop token included when one ended generation. */
  newIds: number[];
  /** Decoded new ids without a final stop token. */
  text: string;
  result: GenerateResult;
  stops: number[];
  /** Set when decoding was self-speculative. */
  speculative?: { acceptanceRate: number; drafted: number; accepted: number; rounds: number; reusedLayers: number };
}

export interface GenerationOptions {
  maxNewTokens: number;
  sampling?: SamplingOptions;
  stopTokens?: number[];
  /** Skip/exit policy of the model itself. */
  policy?: Policy;
  /** Decode self-speculatively with this draft policy and draft length. */
  speculative?: { draft: Policy; draftLength: number };
}

/**
 * Generate from one prompt, calling `write` with text as it is produced (pass nothing to stay silent).
 * @example
 *   const run = await generateText(model, tok, tok.encode('Hi'), { maxNewTokens: 20 }, (s) => process.stdout.write(s));
 */
export async function generateText(model: Model, tok: Tokenizer, promptIds: number[],
  opts: GenerationOptions, write?: (text: string) => void): Promise<GenerationRun> {
  checkPrompt(model, promptIds, opts);
  const V = model.spec.vocabSize;
  const stops = opts.stopTokens ?? model.spec.eosTokenIds ?? [];
  const badStop = stops.find((id) => id >= V);
  if (badStop !== undefined) throw new UsageError(`stop token ${badStop} is outside the vocabulary (0..${V - 1})`, 'pass token ids below the vocabulary size to --stop');
  const stream = new TextStream(tok, promptIds);
  const stopSet = new Set(stops);
  const onToken = write && ((id: number) => { if (!stopSet.has(id)) write(stream.push(id)); });
  let result: GenerateResult;
  let speculative: GenerationRun['speculative'];
  if (opts.speculative) {
    const r = await speculativeGenerate(model, promptIds, {
      maxNewTokens: opts.maxNewTokens, sampling: opts.sampling ?? { greedy: true }, stopTokens: stops, onToken,
      draft: opts.speculative.draft, draftLength: opts.speculative.draftLength,
    });
    result = { tokens: [r.tokens], finish: [r.finish], prefillMs: r.prefillMs, decodeMs: r.decodeMs, decodeSteps: Math.max(0, r.tokens.length - 1), skipped: r.draftSkipped, skipping: [] };
    speculative = { acceptanceRate: r.acceptanceRate, drafted: r.drafted, accepted: r.accepted, rounds: r.rounds, reusedLayers: r.reusedLayers };
  } else {
    result = await generate(model, [promptIds], {
      maxNewTokens: opts.maxNewTokens,
      sampling: opts.sampling ?? { greedy: true },
      stopTokens: stops,
      policy: opts.policy,
      onToken: onToken && ((_row, id) => onToken(id)),
    });
  }
  if (write) write(stream.flush());
  const newIds = result.tokens[0];
  const textIds = result.finish[0] === 'stop' ? newIds.slice(0, -1) : newIds;
  return { promptIds, newIds, text: continuation(tok, promptIds.slice(-CONTEXT_IDS), textIds), result, stops, ...(speculative ? { speculative } : {}) };
}

/** What generateText refuses before any work: an empty prompt, ids beyond the vocabulary, too long for the context. */
export function checkPrompt(model: Model, promptIds: number[], opts: Pick<GenerationOptions, 'maxNewTokens'>): void {
  if (promptIds.length === 0) throw new UsageError('the prompt encodes to no tokens', 'pass a non-empty --prompt');
  const V = model.spec.vocabSize;
  const beyond = promptIds.find((id) => !(id >= 0 && id < V));
  if (beyond !== undefined)
    throw new UsageError(`the prompt encodes to token id ${beyond}, beyond the model's vocabulary of ${V} (its tokenizer knows more tokens than the model has rows)`,
      'use words the model was trained on (a model trained by `brickwork compare` keeps only the tokens of its data), or the tokenizer it was trained with');
  const need = promptIds.length + opts.maxNewTokens;
  if (need > model.spec.maxContext) throw new ContextLengthError(need, model.spec.maxContext, `the prompt (${promptIds.length} tokens) plus ${opts.maxNewTokens} new tokens`);
}

/** New tokens per second over the whole generation (prefill + decode). */
export function tokensPerSecond(run: GenerationRun): number {
  const ms = run.result.prefillMs + run.result.decodeMs;
  return ms > 0 ? run.newIds.length / (ms / 1000) : 0;
}

/** "prefill 4 tok in 79 ms (51 tok/s) | decode 39 tok in 504 ms (77 tok/s) | total 40 new tokens in 583 ms (69 tok/s), ended: length" */
export function statsLine(run: GenerationRun, extra: string[] = []): string {
  const r = run.result;
  const P = run.promptIds.length;
  const parts = [
    run.newIds.length === 0 ? 'prefill -' : `prefill ${fmtInt(P)} tok in ${fmtDuration(r.prefillMs)} (${fmtRate(P / (r.prefillMs / 1000))} tok/s)`,
    r.decodeSteps > 0 ? `decode ${fmtInt(r.decodeSteps)} tok in ${fmtDuration(r.decodeMs)} (${fmtRate(r.decodeSteps / (r.decodeMs / 1000))} tok/s)` : 'decode -',
    `total ${fmtInt(run.newIds.length)} new token${run.newIds.length === 1 ? '' : 's'} in ${fmtDuration(r.prefillMs + r.decodeMs)} (${fmtRate(tokensPerSecond(run))} tok/s)`,
  ];
  const why = r.finish[0] === 'stop' ? `stop token ${run.newIds[run.newIds.length - 1]}` : 'max new tokens';
  return [...parts, `ended by ${why}`, ...extra].join(' | ');
}

interface GenerateFlags {
  model: string;
  prompt: string;
  maxNewTokens: number;
  greedy?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  stop?: number[];
  device: Device;
  policy?: string;
  calib?: string;
  speculative?: string;
  draft: number;
  json?: boolean;
  profile?: number | true;
}

/** Greedy unless a sampling knob was given; a sampled run without --seed gets a random one (printed, so it can be replayed). */
function samplingFrom(f: GenerateFlags): SamplingOptions {
  const sampled = f.temperature !== undefined || f.topK !== undefined || f.topP !== undefined;
  if (f.greedy || !sampled) return { greedy: true };
  return { temperature: f.temperature ?? 1, topK: f.topK, topP: f.topP, seed: f.seed ?? randomInt(0, 2 ** 31) };
}

export function generateCommand(): Command {
  return new Command('generate')
    .description('continue a prompt, streaming the text to stdout (timings go to stderr)')
    .addOption(modelOption())
    .requiredOption('--prompt <text>', 'prompt text (encoded without special tokens)')
    .option('--max-new-tokens <n>', 'tokens to generate at most', intArg(0), 40)
    .addOption(new Option('--greedy', 'argmax decoding (the default unless --temperature/--top-k/--top-p is given)').conflicts(['temperature', 'topK', 'topP']))
    .option('--temperature <t>', 'sample with this temperature (> 0)', floatArg((x) => x > 0, 'a number > 0'))
    .option('--top-k <k>', 'sample among the k most likely tokens', intArg(1))
    .option('--top-p <p>', 'sample from the smallest set of tokens whose probability reaches p', floatArg((x) => x > 0 && x <= 1, 'a number in (0, 1]'))
    .option('--seed <s>', 'random seed for sampling (default: random, printed with the timings)', seedArg)
    .option('--stop <ids>', 'token ids that end generation, comma-separated, or "none" (default: the model\'s eos ids)', idListArg)
    .addOption(deviceOption())
    .addOption(new Option('--policy <spec>', POLICY_HELP).conflicts('speculative'))
    .option('--speculative <spec>', 'decode self-speculatively: draft with the model under this policy, verify with the full model')
    .option('--draft <k>', 'tokens drafted per verification with --speculative', intArg(1), 4)
    .addOption(calibOption('the prompt'))
    .option('--json', 'print one JSON object instead of streaming: {prompt_ids, new_ids, text, tokens_per_second, finish ("stop" or "length"), skipped_fraction, skipped}, plus seed when sampling, policy with --policy, speculative, draft_length, acceptance_rate, drafted, accepted and reused_layers with --speculative, gpu_ms and profile with --profile')
    .option('--profile [n]', 'time every GPU dispatch (WebGPU; the adapter needs timestamp-query) and print the n costliest kinds of kernel to stderr (default 12)', intArg(1))
    .action(async (f: GenerateFlags) => {
      const { backend, name } = await resolveDevice(f.device);
      if (f.profile !== undefined && !(backend instanceof WebGpuBackend)) {
        throw new UsageError(`--profile times GPU dispatches, but the device is ${name}`, 'add --device webgpu');
      }
      const top = f.profile === true ? 12 : f.profile;
      // The profile covers prefill and decoding (not loading); it is read once generation ends.
      const profiled = async () => {
        if (!(backend instanceof WebGpuBackend) || top === undefined) return undefined;
        const entries = await backend.stopProfile();
        return { top, entries };
      };
      const t0 = performance.now();
      const { model, tokenizer } = await loadWithTokenizer(f.model, backend);
      const loadMs = performance.now() - t0;
      const promptIds = tokenizer.encode(f.prompt);
      const sampling = samplingFrom(f);
      const policy = f.policy === undefined ? undefined : await policyFromFlags(model, tokenizer, f.policy, f.calib, { ids: promptIds, what: 'the prompt' });
      const draft = f.speculative === undefined ? undefined : await policyFromFlags(model, tokenizer, f.speculative, f.calib, { ids: promptIds, what: 'the prompt' });
      const opts: GenerationOptions = { maxNewTokens: f.maxNewTokens, sampling, stopTokens: f.stop, policy, ...(draft ? { speculative: { draft, draftLength: f.draft } } : {}) };
      if (top !== undefined) (backend as WebGpuBackend).startProfile();
      if (f.json) {
        const run = await generateText(model, tokenizer, promptIds, opts);
        const prof = await profiled();
        process.stdout.write(JSON.stringify({
          prompt_ids: run.promptIds, new_ids: run.newIds, text: run.text, tokens_per_second: tokensPerSecond(run),
          finish: run.result.finish[0], ...(sampling.greedy ? {} : { seed: sampling.seed }),
          skipped_fraction: run.result.skipped.all, skipped: run.result.skipped,
          ...(policy ? { policy: policy.text } : {}),
          ...(run.speculative ? { speculative: draft!.text, draft_length: f.draft, acceptance_rate: run.speculative.acceptanceRate, drafted: run.speculative.drafted, accepted: run.speculative.accepted, reused_layers: run.speculative.reusedLayers } : {}),
          ...(prof ? { gpu_ms: prof.entries.reduce((s, e) => s + e.ms, 0), profile: prof.entries.slice(0, prof.top) } : {}),
        }) + '\n');
        return;
      }
      // The prompt is echoed first, so stdout reads as one text (as llama.cpp prints it), once the checks
      // that could refuse it have passed.
      checkPrompt(model, promptIds, opts);
      process.stdout.write(f.prompt);
      let printed = f.prompt.length > 0;
      try {
        const run = await generateText(model, tokenizer, promptIds, opts, (s) => { if (s) { printed = true; process.stdout.write(s); } });
        process.stdout.write('\n');
        const extra = [`load ${fmtDuration(loadMs)}`, `device ${name}`];
        if (!sampling.greedy) extra.push(`seed ${sampling.seed}`);
        if (policy) extra.push(`policy ${policy.text}: skipped ${skippedText(run.result.skipped)}`);
        if (run.speculative) extra.push(`speculative ${draft!.text}, draft ${f.draft}: accepted ${fmtInt(run.speculative.accepted)}/${fmtInt(run.speculative.drafted)} drafts (${fmtFixed(100 * run.speculative.acceptanceRate, 1)}%) in ${fmtInt(run.speculative.rounds)} verifications (each took ${fmtFixed(run.speculative.reusedLayers, 2)} of ${model.spec.layers.length} layers from the drafts); draft skipped ${skippedText(run.result.skipped)}`);
        process.stderr.write(`[${statsLine(run, extra)}]\n`);
        const prof = await profiled();
        if (prof) process.stderr.write(`\nGPU time by kernel (every dispatch timed in a pass of its own, so a little above an unprofiled run):\n${profileTable(prof.entries, prof.top)}\n`);
      } catch (e) {
        // End the half-printed line so the error starts on its own.
        if (printed) process.stdout.write('\n');
        throw e;
      }
    });
}
