// Bad checkpoints through the model loader: each case gives a typed error whose message names the
// file, tensor or field and carries a hint. The inputs are damaged copies of the bundled model.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CheckpointError, TensorMismatchError, UnsupportedModelError, getBackend, loadModel, openTensors, writeSafetensors, readModelSource,
} from '../src/index.ts';
import { BUNDLED } from './helpers.ts';

function copyModel(): string {
  const dir = mkdtempSync(join(tmpdir(), 'bw-bad-'));
  cpSync(BUNDLED, dir, { recursive: true });
  return dir;
}

async function expectError(mutate: (dir: string) => void, type: new (...a: never[]) => Error, ...patterns: RegExp[]) {
  const dir = copyModel();
  try {
    mutate(dir);
    await assert.rejects(loadModel(dir, { backend: await getBackend('cpu') }), (e: unknown) => {
      assert.ok(e instanceof type, `expected ${type.name}, got ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
      const msg = (e as Error).message;
      for (const p of patterns) assert.match(msg, p);
      assert.match(msg, /hint: /);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Rewrite model.safetensors through `edit`, which may drop or reshape tensors. */
function rewriteWeights(dir: string, edit: (name: string, t: { dtype: 'bf16'; shape: number[]; data: Uint16Array }) => typeof t | undefined) {
  const file = join(dir, 'model.safetensors');
  const src = openTensors(file);
  const out = [];
  for (const name of src.names()) {
    const t = edit(name, src.read(name) as { dtype: 'bf16'; shape: number[]; data: Uint16Array });
    if (t) out.push({ name, ...t });
  }
  src.close();
  writeSafetensors(file, out);
}

test('truncated safetensors', () => expectError((d) => {
  const f = join(d, 'model.safetensors');
  truncateSync(f, statSync(f).size - 1000);
}, CheckpointError, /model\.safetensors/, /truncated/));

test('header offsets beyond the file', () => expectError((d) => {
  const f = join(d, 'model.safetensors');
  const buf = readFileSync(f);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  header['model.norm.weight'].data_offsets = [1e9, 1e9 + 512];
  let text = JSON.stringify(header);
  text = text.padEnd(n, ' ');
  assert.ok(text.length <= n, 'edited header must fit in place');
  buf.write(text, 8, 'utf8');
  writeFileSync(f, buf);
}, CheckpointError, /model\.safetensors/, /model\.norm\.weight/));

test('missing tensor', () => expectError((d) => rewriteWeights(d, (name, t) => (name === 'model.norm.weight' ? undefined : t)),
  TensorMismatchError, /model\.norm\.weight/, /missing/));

test('tensor of the wrong shape', () => expectError((d) => rewriteWeights(d, (name, t) =>
  name === 'model.layers.3.mlp.up_proj.weight' ? { ...t, shape: [t.shape[1], t.shape[0]] } : t),
  TensorMismatchError, /model\.layers\.3\.mlp\.up_proj\.weight/, /expected shape \[688, 256\], found \[256, 688\]/));

test('a weight holding inf or NaN is refused at load, naming the tensor', () => expectError((d) => rewriteWeights(d, (name, t) => {
  if (name !== 'model.layers.2.mlp.down_proj.weight') return t;
  const data = t.data.slice();
  data[5] = 0x7f80; // bf16 +inf
  data[9] = 0x7fc0; // bf16 NaN
  return { ...t, data };
}), TensorMismatchError, /model\.layers\.2\.mlp\.down_proj\.weight/, /holds 2 values that are inf or NaN \(the first at index 5: Infinity\)/));

test('unknown model_type', () => expectError((d) => {
  const f = join(d, 'config.json');
  writeFileSync(f, JSON.stringify({ ...JSON.parse(readFileSync(f, 'utf8')), model_type: 'foo' }));
}, UnsupportedModelError, /config\.json/, /model_type 'foo'/, /llama, mistral, qwen2, mixtral, gpt2/));

test('config field of the wrong type', () => expectError((d) => {
  const f = join(d, 'config.json');
  writeFileSync(f, JSON.stringify({ ...JSON.parse(readFileSync(f, 'utf8')), hidden_size: 'big' }));
}, CheckpointError, /config\.json/, /hidden_size/));

test('malformed tokenizer.json', async () => {
  await expectError((d) => writeFileSync(join(d, 'tokenizer.json'), '{not json'), CheckpointError, /tokenizer\.json/, /not valid JSON/);
  await expectError((d) => writeFileSync(join(d, 'tokenizer.json'), '{"model": {"type": "Nonsense"}}'), CheckpointError, /tokenizer\.json/);
});

test('rope_theta (transformers 4) and rope_parameters (transformers 5) give the same spec', () => {
  const dir = copyModel();
  try {
    const f = join(dir, 'config.json');
    const cfg = JSON.parse(readFileSync(f, 'utf8'));
    const spec5 = readModelSource(dir).spec;
    delete cfg.rope_parameters;
    cfg.rope_theta = 10000;
    writeFileSync(f, JSON.stringify(cfg));
    assert.deepEqual(readModelSource(dir).spec, spec5);
    cfg.rope_theta = 500000;
    writeFileSync(f, JSON.stringify(cfg));
    assert.equal(readModelSource(dir).spec.rope?.theta, 500000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
