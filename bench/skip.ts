// Skipping speed: greedy decode tokens/s under skip policies against the dense model, measured in the
// same run on the same device, with the ratio the skipped FLOPs alone would give (the limit).
// Speed does not depend on the weights, so the 125M and 1B Llama shapes use random weights; quality and
// acceptance rates come from trained models (`brickwork sweep`). Self-speculative decoding is timed on
// the bundled tiny-llama, where the draft's acceptance is real.
//   node --import ./scripts/ts.mjs bench/skip.ts [--device cpu|webgpu] [--models tiny,125M,1B] [--tokens N] [--reps R]
// Each rate is the best of R runs (default 3), taken alternately with dense runs.

import {
  brickCosts, createPolicy, generate, getBackend, llamaSpec, loadModel, randomModel, speculativeGenerate, SkipMeter,
  type Backend, type Model, type Policy, type SamplingOptions,
} from '../src/index.ts';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const device = arg('device', 'cpu') as 'cpu' | 'webgpu';
const models = arg('models', device === 'cpu' ? 'tiny,125M' : 'tiny,125M,1B').split(',');
const N = Number(arg('tokens', '64'));
const REPS = Number(arg('reps', '3'));
const log = (s: string) => process.stdout.write(s + '\n');

const be: Backend = await getBackend(device);
const PROMPT = [1031, 824, 259, 555, 14, 599, 309, 259];

type Run = () => Promise<{ steps: number; ms: number }>;

/** Decode tok/s of each run and of dense decoding (greedy, or `sampling`), last: the best of REPS runs each, taken alternately. */
async function rates(model: Model, runs: Run[], sampling?: SamplingOptions): Promise<number[]> {
  const dense = async () => {
    const r = await generate(model, [PROMPT], { maxNewTokens: N, stopTokens: [], sampling });
    return { steps: r.decodeSteps, ms: r.decodeMs };
  };
  const all = [...runs, dense];
  const best = all.map(() => 0);
  for (let i = 0; i < REPS; i++) for (const [j, f] of all.entries()) {
    const r = await f();
    best[j] = Math.max(best[j], r.steps / (r.ms / 1000));
  }
  return best;
}

const withPolicy = (model: Model, policy: Policy) => async () => {
  const r = await generate(model, [PROMPT], { maxNewTokens: N, stopTokens: [], policy });
  return { steps: r.decodeSteps, ms: r.decodeMs };
};

/** Per-token FLOPs of the whole model (head included) over those left after a static plan: the speedup if time followed FLOPs. */
function flopLimit(model: Model, policy: Policy): number {
  const costs = brickCosts(model.spec, PROMPT.length + N / 2);
  const skip = new Set(policy.session().skipping);
  const total = costs.reduce((p, c) => p + c.flopsPerToken, 0);
  return total / (total - costs.filter((c) => skip.has(c.name)).reduce((p, c) => p + c.flopsPerToken, 0));
}

log(`# skipping speed on ${device}${be.name ? ` (${be.name})` : ''}, ${N} greedy tokens after an ${PROMPT.length}-token prompt`);
log('| model | policy | FFN skipped | attn skipped | decode tok/s | dense tok/s (same run) | speedup | FLOP limit |');
log('|---|---|---:|---:|---:|---:|---:|---:|');
for (const name of models) {
  let model: Model;
  if (name === 'tiny') model = (await loadModel(new URL('../models/tiny-llama', import.meta.url).pathname, { backend: be })).model;
  else {
    const dims = name === '125M' ? { vocab: 32000, width: 768, layers: 12, heads: 12, ffn: 2048 } : { vocab: 32000, width: 2048, layers: 16, heads: 32, kvHeads: 8, ffn: 8192 };
    model = randomModel(llamaSpec({ ...dims, context: 2048 }), be, { seed: 1, dtype: device === 'cpu' ? 'f32' : 'f16' });
  }
  const L = model.spec.layers.length;
  const q = L / 4;
  const specs = [
    `static:layers.${q}-${2 * q - 1}.ffn`, // 25% of the FFNs
    `static:layers.${q}-${3 * q - 1}.ffn`, // 50% of the FFNs
    `static:layers.${L - q}-${L - 1}`, // the last 25% of the blocks
  ];
  await generate(model, [PROMPT], { maxNewTokens: N, stopTokens: [] }); // warm-up
  for (const s of specs) {
    const policy = await createPolicy(model, s);
    const [r, dense] = await rates(model, [withPolicy(model, policy)]);
    const meter = new SkipMeter(model.spec, PROMPT.length + N / 2);
    meter.record({ skipped: [...policy.session().skipping], exitLayer: L }, 1, { cached: true });
    log(`| ${name} | ${s} | ${(100 * meter.fraction.ffn).toFixed(1)}% | ${(100 * meter.fraction.attn).toFixed(1)}% | ${r.toFixed(1)} | ${dense.toFixed(1)} | ${(r / dense).toFixed(2)}x | ${flopLimit(model, policy).toFixed(2)}x |`);
  }
  if (name === 'tiny') {
    log('');
    // Each verification starts at the first layer the round's drafts did not run exactly (reuse); the
    // column without it runs the whole model over the drafted rows, the same tokens.
    log('| self-speculative draft (tiny-llama) | k | acceptance | identical to dense | layers reused | decode tok/s | without reuse (same run) | dense tok/s (same run) | speedup | reuse gain |');
    log('|---|---:|---:|---|---:|---:|---:|---:|---:|---:|');
    const ref = (await generate(model, [PROMPT], { maxNewTokens: N, stopTokens: [] })).tokens[0];
    for (const [s, k] of [[`static:layers.${L / 2}-${L - 1}`, 3], [`static:layers.${q}-${L - 1}`, 2], ['early-exit:0.5', 3], ['ffn-skip:0.5,warmup=8', 4]] as [string, number][]) {
      const draft = await createPolicy(model, s);
      let acc = 0, reused = 0, same = true;
      const spec = (reuse: boolean): Run => async () => {
        const r = await speculativeGenerate(model, PROMPT, { maxNewTokens: N, draft, draftLength: k, stopTokens: [], reuse });
        acc = r.acceptanceRate;
        if (reuse) reused = r.reusedLayers;
        same &&= r.tokens.every((t, j) => t === ref[j]);
        return { steps: r.tokens.length - 1, ms: r.decodeMs };
      };
      const [best, plain, dense] = await rates(model, [spec(true), spec(false)]);
      log(`| ${s} | ${k} | ${(100 * acc).toFixed(1)}% | ${same ? 'yes' : 'NO'} | ${reused.toFixed(2)} of ${L} | ${best.toFixed(1)} | ${plain.toFixed(1)} | ${dense.toFixed(1)} | ${(best / dense).toFixed(2)}x | ${(best / plain).toFixed(2)}x |`);
    }
    log('');
    // Sampled: the output follows the full model's distribution (not the same tokens as a dense run,
    // whose random numbers are used differently); dense sampled decoding is the peer.
    const sampling = { temperature: 1, topK: 40, seed: 1 };
    log(`| self-speculative sampling (tiny-llama, ${JSON.stringify(sampling)}) | k | acceptance | decode tok/s | dense sampled tok/s (same run) | speedup |`);
    log('|---|---:|---:|---:|---:|---:|');
    for (const [s, k] of [[`static:layers.${L / 2}-${L - 1}`, 3], [`static:layers.${q}-${L - 1}`, 2]] as [string, number][]) {
      const draft = await createPolicy(model, s);
      let acc = 0;
      const [best, dense] = await rates(model, [async () => {
        const r = await speculativeGenerate(model, PROMPT, { maxNewTokens: N, draft, draftLength: k, stopTokens: [], sampling });
        acc = r.acceptanceRate;
        return { steps: r.tokens.length - 1, ms: r.decodeMs };
      }], sampling);
      log(`| ${s} | ${k} | ${(100 * acc).toFixed(1)}% | ${best.toFixed(1)} | ${dense.toFixed(1)} | ${(best / dense).toFixed(2)}x |`);
    }
    log('');
    // The draft reads the full model's cache, so a speculative run prefills once, as dense decoding does.
    const long = Array.from({ length: 256 }, (_, i) => PROMPT[i % PROMPT.length]);
    const prefill = async (f: () => Promise<number>) => {
      let best = Infinity;
      for (let i = 0; i < REPS; i++) best = Math.min(best, await f());
      return best;
    };
    const draft = await createPolicy(model, `static:layers.${L / 2}-${L - 1}`);
    const dense = await prefill(async () => (await generate(model, [long], { maxNewTokens: 1, stopTokens: [] })).prefillMs);
    const spec = await prefill(async () => (await speculativeGenerate(model, long, { maxNewTokens: 1, draft, draftLength: 3, stopTokens: [] })).prefillMs);
    log(`| prefill of a ${long.length}-token prompt (tiny-llama) | ms | dense (same run) | ratio |`);
    log('|---|---:|---:|---:|');
    log(`| speculative, draft ${draft.text} | ${spec.toFixed(1)} | ${dense.toFixed(1)} | ${(spec / dense).toFixed(2)}x |`);
    log('');
  }
}
if (device === 'webgpu') process.exit(0);
