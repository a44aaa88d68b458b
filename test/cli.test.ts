// The CLI end to end: each case spawns `node --import ./scripts/ts.mjs src/cli/main.ts …` as a user would and checks
// stdout, stderr and the exit code, on the bundled models/tiny-llama (which is the fixtures' tiny-llama,
// so greedy ids are compared with HF's golden ids when ../shared/fixtures is present). Bad input must
// exit 1 with `error:` and a `hint:` and no stack trace. Also checks the streaming decoder in-process.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { memoryFiles, openTensors, Tokenizer, writeSafetensors } from '../src/index.ts';
import { continuation, TextStream } from '../src/cli/generate.ts';
import { displayPath } from '../src/cli/common.ts';
import { skippedText } from '../src/cli/format.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MODEL = join(ROOT, 'models/tiny-llama');
const GOLDEN = resolve(ROOT, process.env.BRICKWORK_FIXTURES ?? '../shared/fixtures', 'tiny-llama/golden.json');

interface Run { code: number | null; stdout: string; stderr: string }

function cli(...args: string[]): Run {
  const env = { ...process.env };
  delete env.BRICKWORK_DEBUG; // the no-stack-trace checks assume it is unset
  const r = spawnSync(process.execPath, ['--import', './scripts/ts.mjs', 'src/cli/main.ts', ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function json(r: Run): any {
  assert.equal(r.code, 0, `exit code ${r.code}; stderr:\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Exit 1 with `error:` + `hint:` and no stack frame. */
function assertCleanError(r: Run, mentions?: RegExp): void {
  assert.equal(r.code, 1, `expected exit 1, got ${r.code}; stderr:\n${r.stderr}`);
  assert.match(r.stderr, /^error: /m);
  assert.match(r.stderr, /^hint: /m);
  assert.ok(!r.stderr.includes('    at '), `stack trace printed:\n${r.stderr}`);
  if (mentions) assert.match(r.stderr, mentions);
}

const golden = existsSync(GOLDEN) ? (JSON.parse(readFileSync(GOLDEN, 'utf8')) as { prompts: { text: string; ids: number[]; greedy_next_40: number[] }[] }) : undefined;
let tmp = '';
let greedy8: number[] = [];

/** A writable copy of the bundled model under the temp folder. */
function copyModel(name: string): string {
  const dir = join(tmp, name);
  cpSync(MODEL, dir, { recursive: true });
  chmodSync(dir, 0o755);
  for (const f of readdirSync(dir)) chmodSync(join(dir, f), 0o644); // the bundled files are read-only
  return dir;
}

before(() => { tmp = mkdtempSync(join(tmpdir(), 'brickwork-cli-')); });
after(() => { if (tmp) rmSync(tmp, { recursive: true, force: true }); });

test('generate --profile needs the WebGPU device and says so', () => {
  assertCleanError(cli('generate', '--device', 'cpu', '--prompt', 'Once', '--profile'), /--profile times GPU dispatches, but the device is cpu/);
});

test('generate --json: greedy ids match HF', () => {
  const out = json(cli('generate', '--greedy', '--max-new-tokens', '8', '--json', '--prompt', 'Once upon a time'));
  assert.deepEqual(Object.keys(out), ['prompt_ids', 'new_ids', 'text', 'tokens_per_second', 'finish', 'skipped_fraction', 'skipped']);
  assert.equal(out.new_ids.length, 8);
  assert.ok(out.new_ids.every((x: unknown) => Number.isInteger(x)));
  assert.equal(typeof out.text, 'string');
  assert.ok(out.text.length > 0);
  assert.ok(Number.isFinite(out.tokens_per_second) && out.tokens_per_second > 0);
  if (golden) {
    assert.equal(golden.prompts[0].text, 'Once upon a time');
    assert.deepEqual(out.prompt_ids, golden.prompts[0].ids);
    assert.deepEqual(out.new_ids, golden.prompts[0].greedy_next_40.slice(0, 8));
  }
  greedy8 = out.new_ids;
});

test('generate echoes the prompt, streams the same text as --json, and prints timings on stderr', () => {
  const streamed = cli('generate', '--max-new-tokens', '8', '--prompt', 'Once upon a time');
  assert.equal(streamed.code, 0, streamed.stderr);
  const out = json(cli('generate', '--max-new-tokens', '8', '--json', '--prompt', 'Once upon a time'));
  assert.equal(streamed.stdout, 'Once upon a time' + out.text + '\n'); // the prompt is echoed first
  assert.match(streamed.stderr, /prefill 4 tok in .* tok\/s.*decode 7 tok in .* tok\/s.*total 8 new tokens/);
});

test('inspect --json: totals and one row per brick', () => {
  const out = json(cli('inspect', '--json'));
  assert.equal(out.totals.params, 7_639_296);
  assert.equal(out.totals.ctx, 256);
  assert.equal(out.bricks.length, 1 + 8 * 2 + 1);
  assert.equal(out.spec.layers.length, 8);
  const table = cli('inspect');
  assert.equal(table.code, 0);
  assert.match(table.stdout, /layers\.7\.ffn\s+ffn\s+F=688 gated silu\s+528,640/);
  assert.match(table.stdout, /H=8 K=2 D=32 rope/);
});

test('ppl --json scores exactly --max-tokens tokens', () => {
  const file = join(tmp, 'text.txt');
  const para = 'The old man walked slowly along the river, watching the boats drift past in the morning light. '
    + 'Children ran across the bridge, laughing, while their mother called after them to be careful. '
    + 'It was the first warm day of spring, and the whole town seemed to have come outside to enjoy it.\n\n';
  writeFileSync(file, para.repeat(12));
  const out = json(cli('ppl', '--json', '--max-tokens', '300', '--file', file));
  assert.deepEqual(Object.keys(out), ['ppl', 'tokens_scored']);
  assert.equal(out.tokens_scored, 300);
  assert.ok(Number.isFinite(out.ppl) && out.ppl > 1, `ppl ${out.ppl}`);
});

test('convert to a native checkpoint, then generate from it: same ids', () => {
  const out = join(tmp, 'native');
  const r = cli('convert', '--out', out);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /model\.safetensors/);
  for (const f of ['brickwork.json', 'model.safetensors', 'tokenizer.json']) assert.ok(existsSync(join(out, f)), f);
  const gen = json(cli('generate', '--model', out, '--greedy', '--max-new-tokens', '8', '--json', '--prompt', 'Once upon a time'));
  assert.equal(greedy8.length, 8, 'the first test provides the reference ids');
  assert.deepEqual(gen.new_ids, greedy8);
  // A second convert into the now non-empty folder is refused without --force.
  assertCleanError(cli('convert', '--out', out), /already holds files/);
});

test('generate --policy and --speculative report what was skipped and the acceptance rate', () => {
  const args = ['generate', '--greedy', '--max-new-tokens', '16', '--stop', 'none', '--json', '--prompt', 'Once upon a time'];
  const dense = json(cli(...args));
  assert.equal(dense.skipped_fraction, 0);
  const skip = json(cli(...args, '--policy', 'static:layers.3-4.ffn'));
  assert.equal(skip.policy, 'static:layers.3-4.ffn');
  assert.ok(Math.abs(skip.skipped.ffn - 0.25) < 1e-12 && skip.skipped_fraction > 0.1 && skip.skipped_fraction < 0.25, JSON.stringify(skip.skipped));
  const spec = json(cli(...args, '--speculative', 'static:layers.4-7', '--draft', '3'));
  assert.deepEqual(spec.new_ids, dense.new_ids, 'speculative greedy output differs from dense');
  assert.ok(spec.acceptance_rate > 0 && spec.acceptance_rate < 1 && spec.accepted <= spec.drafted, JSON.stringify(spec));
  assert.equal(spec.draft_length, 3);
  const line = cli(...args.filter((a) => a !== '--json'), '--policy', 'ffn-skip:0.25,warmup=4');
  assert.equal(line.code, 0, line.stderr);
  assert.match(line.stderr, /policy ffn-skip:0\.25,warmup=4: skipped \d+\.\d% of FFN FLOPs/);
});

test('ppl --policy scores with the policy and reports the skipped share', () => {
  const file = join(tmp, 'text-policy.txt');
  writeFileSync(file, 'The river ran past the old mill, and the miller watched the water turn the wheel all day long. '.repeat(30));
  const out = json(cli('ppl', '--json', '--max-tokens', '200', '--file', file, '--policy', 'block-influence:0.25', '--window', '100'));
  assert.equal(out.tokens_scored, 200);
  assert.ok(Math.abs(out.skipped.ffn - 0.25) < 1e-12, JSON.stringify(out));
  const dense = json(cli('ppl', '--json', '--max-tokens', '200', '--file', file, '--window', '100'));
  assert.notEqual(out.ppl, dense.ppl);
});

test('block influence calibrates on text it does not score, and warns when it has to', () => {
  const file = join(tmp, 'text-calib.txt');
  writeFileSync(file, 'The river ran past the old mill, and the miller watched the water turn the wheel all day long. '.repeat(30));
  const args = ['ppl', '--json', '--file', file, '--policy', 'block-influence:0.25', '--window', '100'];
  const apart = cli(...args, '--max-tokens', '200'); // about 400 tokens follow the scored ones
  assert.equal(apart.code, 0, apart.stderr);
  assert.doesNotMatch(apart.stderr, /warning/);
  const all = cli(...args); // every token is scored: nothing is left over
  assert.equal(all.code, 0, all.stderr);
  assert.match(all.stderr, /^warning: block-influence calibrated on the first tokens of --file \([\d,]+ tokens, which are also scored\); pass --calib FILE/m);
  const gen = cli('generate', '--prompt', 'Once upon a time', '--max-new-tokens', '2', '--policy', 'block-influence:0.25');
  assert.equal(gen.code, 0, gen.stderr);
  assert.match(gen.stderr, /^warning: block-influence calibrated on the prompt \(4 tokens\)/m);
});

test('generation_config.json decides the stop tokens, as in transformers', () => {
  const dir = copyModel('gencfg');
  const gen = JSON.parse(readFileSync(join(dir, 'generation_config.json'), 'utf8'));
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ ...gen, eos_token_id: [0, 14] })); // 14 is '.', the first greedy token
  const r = json(cli('generate', '--model', dir, '--prompt', 'Once upon a time', '--max-new-tokens', '10', '--json'));
  assert.deepEqual(r.new_ids, [14]);
  assert.equal(r.finish, 'stop');
  assert.equal(r.text, '');
  const plain = json(cli('generate', '--prompt', 'Once upon a time', '--max-new-tokens', '3', '--json'));
  assert.deepEqual([plain.new_ids.length, plain.finish], [3, 'length']);
  writeFileSync(join(dir, 'generation_config.json'), '{"eos_token_id": "end"}');
  assertCleanError(cli('generate', '--model', dir, '--prompt', 'hi'), /generation_config\.json: field 'eos_token_id'/);
});

test('tensors the config does not use are named in a warning, as transformers does', () => {
  const dir = copyModel('fewlayers');
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: 4 }));
  const r = cli('generate', '--model', dir, '--prompt', 'Once upon a time', '--max-new-tokens', '2');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^warning: 36 tensors of .*fewlayers were not used: model\.layers\.4\.input_layernorm\.weight, .*\(33 more\); its config may not describe these weights/m);
  const clean = cli('generate', '--prompt', 'Once upon a time', '--max-new-tokens', '2');
  assert.equal(clean.code, 0, clean.stderr);
  assert.doesNotMatch(clean.stderr, /warning/);
});

test('skipped shares read as shares, and a negative one (more experts than the model routes to) as added', () => {
  assert.equal(skippedText({ ffn: 0.25, attn: 0, all: 0.174, overhead: 0 }), '25.0% of FFN FLOPs, 0.0% of attention FLOPs (17.4% of all sublayer FLOPs)');
  assert.equal(skippedText({ ffn: -0.997, attn: 0, all: -0.812, overhead: 0.5 }),
    '-99.7% (added) of FFN FLOPs, 0.0% of attention FLOPs (-81.2% (added) of all sublayer FLOPs; exit checks added 50.0%)');
});

test('paths are printed as the user gave them, or relative to the working folder when inside it', () => {
  const cwd = process.cwd();
  assert.equal(displayPath('../shared/data/x.txt'), join('..', 'shared', 'data', 'x.txt'));
  assert.equal(displayPath('./runs//a/'), join('runs', 'a'));
  assert.equal(displayPath(join(cwd, 'runs', 'a')), join('runs', 'a'));
  assert.equal(displayPath(cwd), '.');
  const outside = resolve(cwd, '..', '..', 'elsewhere');
  assert.equal(displayPath(outside), outside);
  assert.match(displayPath(MODEL), /^(models[\\/]tiny-llama|\/.*) \(bundled\)$/);
});

test('sweep prints a table and writes JSON and SVG', () => {
  const file = join(tmp, 'text-sweep.txt');
  writeFileSync(file, 'She opened the window and the cold air of the morning came in with the sound of bells. '.repeat(40));
  const outDir = join(tmp, 'sweep-out');
  const r = cli('sweep', '--file', file, '--policy', 'ffn-skip', '--values', '0.25', '--max-tokens', '128', '--window', '64',
    '--gen-tokens', '8', '--prompt-tokens', '8', '--speculative', '--draft', '2', '--out', outDir);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /policy\s+setting\s+FFN skipped\s+attn skipped\s+perplexity\s+decode tok\/s\s+dense tok\/s\s+vs dense\s+accept/);
  assert.match(r.stdout, /^ffn-skip\s+0\.25\s/m);
  const report = JSON.parse(readFileSync(join(outDir, 'sweep.json'), 'utf8'));
  assert.equal(report.rows.length, 2);
  assert.equal(report.rows[0].policy, 'dense');
  assert.equal(report.rows[1].speculative.identical, true);
  // Verification on the CPU starts above the draft's exact layers: at least layer 0 (never skipped), at most all 8.
  const reused = report.rows[1].speculative.reusedLayers;
  assert.ok(reused >= 1 && reused <= 8, `reusedLayers ${reused}`);
  const svg = readFileSync(join(outDir, 'sweep.svg'), 'utf8');
  assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.equal((svg.match(/<polyline /g) ?? []).length, 3, 'one line per panel');
});

test('generate refuses a prompt before echoing it', () => {
  const r = cli('generate', '--prompt', 'Once upon a time', '--max-new-tokens', '99999');
  assertCleanError(r, /the prompt \(4 tokens\) plus 99999 new tokens needs 100003 positions but the model's context is 1024 tokens/);
  assert.equal(r.stdout, '');
});

test('sweep checks every setting before measuring any', () => {
  const file = join(tmp, 'text-sweep-bad.txt');
  writeFileSync(file, 'The cat sat on the mat. '.repeat(200));
  const outDir = join(tmp, 'sweep-bad');
  // ffn-skip takes warmup=, early-exit does not: the early-exit settings come second, and still stop it first.
  const r = cli('sweep', '--file', file, '--policy', 'ffn-skip,early-exit', '--options', 'warmup=4', '--max-tokens', '128', '--window', '64', '--out', outDir);
  assertCleanError(r, /policy 'early-exit:0\.95,warmup=4': unknown option 'warmup=4'/);
  assert.doesNotMatch(r.stderr, /ffn-skip:0\.125,warmup=4: perplexity/, 'no setting was measured');
  assert.equal(existsSync(outDir), false);
  const empty = cli('sweep', '--file', file, '--policy', 'ffn-skip', '--values', '0.25,,0.5');
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /expected comma-separated numbers in \[0, 1\]/);
});

test('bad input: exit 1, error + hint, no stack trace', async (t) => {
  await t.test('truncated model.safetensors', () => {
    const dir = copyModel('truncated');
    truncateSync(join(dir, 'model.safetensors'), 1_000_000);
    assertCleanError(cli('generate', '--model', dir, '--prompt', 'hi'), /model\.safetensors/);
  });
  await t.test('unknown model_type', () => {
    const dir = copyModel('foo');
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, model_type: 'foo' }));
    assertCleanError(cli('generate', '--model', dir, '--prompt', 'hi'), /foo/);
  });
  await t.test('malformed tokenizer.json', () => {
    const dir = copyModel('badtok');
    writeFileSync(join(dir, 'tokenizer.json'), '{not json');
    assertCleanError(cli('generate', '--model', dir, '--prompt', 'hi'), /tokenizer\.json/);
  });
  await t.test('a tensor missing from the checkpoint', () => {
    const dir = copyModel('missing');
    const src = openTensors(join(MODEL, 'model.safetensors'));
    const tensors: Parameters<typeof writeSafetensors>[1] = src.names().filter((n) => n !== 'model.norm.weight').map((name) => ({ name, ...src.read(name) }));
    src.close();
    writeSafetensors(join(dir, 'model.safetensors'), tensors);
    assertCleanError(cli('generate', '--model', dir, '--prompt', 'hi'), /model\.norm\.weight/);
  });
  await t.test('prompt + new tokens longer than the context', () => {
    assertCleanError(cli('generate', '--max-new-tokens', '2000', '--prompt', 'Once upon a time'), /context is 1024/);
  });
  await t.test('model folder that does not exist', () => {
    assertCleanError(cli('generate', '--model', join(tmp, 'no-such-model'), '--prompt', 'hi'), /no-such-model/);
  });
  await t.test('a policy naming a layer the model lacks', () => {
    assertCleanError(cli('generate', '--prompt', 'hi', '--policy', 'static:layers.12.ffn'), /layer 12 does not exist: the model has 8 layers/);
  });
  await t.test('a skip fraction outside [0, 1]', () => {
    assertCleanError(cli('generate', '--prompt', 'hi', '--speculative', 'ffn-skip:1.5'), /fraction: expected a number in \[0, 1\], found '1\.5'/);
  });
  await t.test('ppl with a missing --file', () => {
    assertCleanError(cli('ppl', '--file', join(tmp, 'no-such-file.txt')), /no-such-file/);
  });
});

test('usage errors exit 2 with commander\'s message', () => {
  const r = cli('ppl');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /required option '--file <path>'/);
  const bad = cli('generate', '--prompt', 'hi', '--max-new-tokens', 'lots');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--max-new-tokens/);
});

test('bin/brickwork.js runs the CLI', () => {
  const r = spawnSync(process.execPath, ['bin/brickwork.js', 'inspect', '--json'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).totals.params, 7_639_296);
});

test('TextStream never prints half a multi-byte character', async () => {
  const tok = await Tokenizer.fromDir(MODEL);
  const text = 'café naïve — 日本語 🙂 ok';
  const ids = tok.encode(text);
  const stream = new TextStream(tok);
  let printed = '';
  for (const id of ids) {
    const delta = stream.push(id);
    assert.ok(!delta.includes('\uFFFD'), `delta ${JSON.stringify(delta)} holds a replacement character`);
    printed += delta;
  }
  printed += stream.flush();
  assert.equal(printed, tok.decode(ids));
  assert.equal(printed, text);
});

test('a SentencePiece-style decoder keeps the space between the prompt and what follows', () => {
  // Metaspace (Llama 2, Mistral): decoding a text strips the space of its first token, so the new ids
  // are decoded after the prompt's last ids, and the prompt's text is cut off.
  // A BPE vocabulary of '\u2581' + letter (ids 6..10), each merged from '\u2581' and the letter.
  const ws = ['a', 'b', 'c', 'd', 'e'];
  const vocab: Record<string, number> = { '\u2581': 0 };
  ws.forEach((w, i) => { vocab[w] = 1 + i; vocab[`\u2581${w}`] = 6 + i; });
  const meta = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true };
  const tok = Tokenizer.fromFiles(memoryFiles({ 'tokenizer.json': JSON.stringify({
    version: '1.0', added_tokens: [], normalizer: null, pre_tokenizer: meta, post_processor: null, decoder: meta,
    model: { type: 'BPE', vocab, merges: ws.map((w) => `\u2581 ${w}`), unk_token: null, dropout: null, continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false },
  }) }));
  const prompt = tok.encode('a b');
  assert.deepEqual(prompt, [6, 7]);
  assert.equal(tok.decode([8, 9]), 'c d', 'the decoder strips the first space');
  assert.equal(continuation(tok, prompt, [8, 9]), ' c d');
  assert.equal(continuation(tok, [], [8, 9]), 'c d');
  const stream = new TextStream(tok, prompt);
  const printed = [8, 9, 10].map((id) => stream.push(id)).join('') + stream.flush();
  assert.equal('a b' + printed, 'a b c d e');
});
