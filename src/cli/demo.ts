// `npm start`: a tour on the bundled models/tiny-llama. Generates greedily from a few short prompts,
// streaming the text with prefill/decode speeds, then prints the model's brick table. Runs on the CPU
// in a few seconds; uses the same helpers as the CLI commands and, like them, only the public API.

import { getBackend, loadModel, readModelSource } from '../index.ts';
import { DEFAULT_MODEL } from './common.ts';
import { fmtDuration } from './format.ts';
import { generateText, statsLine } from './generate.ts';
import { inspectReport } from './inspect.ts';

const PROMPTS = ['Once upon a time', 'The quick brown fox', 'It was a dark and stormy night'];
const NEW_TOKENS = 40;

const out = (s: string) => process.stdout.write(s);

out(`Brickwork runs transformer language models brick by brick: every attention, feed-forward and
mixture-of-experts sublayer of a Hugging Face checkpoint can be run, skipped, inspected or swapped on
its own, on the CPU or WebGPU. This demo loads the bundled models/tiny-llama, a 7.6M-parameter Llama
trained briefly on TinyStories, Shakespeare, War and Peace and WikiText (weak, but real English), and
continues a few prompts greedily, ${NEW_TOKENS} tokens each, streaming the text as it is produced. Try
it yourself with \`npx brickwork generate --prompt "..."\`, \`brickwork ppl --file <text>\` or
\`brickwork inspect\`.

`);

const t0 = performance.now();
const { model, tokenizer } = await loadModel(DEFAULT_MODEL, { backend: await getBackend('cpu') });
if (!tokenizer) throw new Error(`${DEFAULT_MODEL} has no tokenizer.json`);
out(`loaded in ${fmtDuration(performance.now() - t0)} (cpu)\n\n`);

for (const prompt of PROMPTS) {
  out(`> ${prompt}`);
  const run = await generateText(model, tokenizer, tokenizer.encode(prompt), { maxNewTokens: NEW_TOKENS, sampling: { greedy: true } }, out);
  out(`\n  [${statsLine(run)}]\n\n`);
}

out(`What the model is made of (\`brickwork inspect\`):\n\n`);
out(inspectReport(readModelSource(DEFAULT_MODEL), 256));
