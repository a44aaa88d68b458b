// HF family mappings without their own fixtures: qwen2 (q/k/v biases, tied embeddings) and mistral
// (sliding window), checked by rewriting the bundled Llama checkpoint into those layouts and comparing
// logits with the equivalent Llama computation.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getBackend, loadModel, openTensors, readModelSource, writeSafetensors, Model, type Tensor } from '../src/index.ts';
import { BUNDLED } from './helpers.ts';

const IDS = Int32Array.from([10, 200, 3000, 42, 7, 99]);

function variant(edit: (cfg: Record<string, unknown>) => void, tensors: (add: (name: string, shape: number[], data: Float32Array) => void, read: (n: string) => Float32Array) => void, drop: string[] = []) {
  const dir = mkdtempSync(join(tmpdir(), 'bw-fam-'));
  cpSync(BUNDLED, dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  edit(cfg);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  const src = openTensors(join(BUNDLED, 'model.safetensors'));
  const out = src.names().filter((n) => !drop.includes(n)).map((name) => ({ name, ...src.read(name) }));
  tensors((name, shape, data) => out.push({ name, dtype: 'f32', shape, data }), (n) => src.readF32(n));
  src.close();
  writeSafetensors(join(dir, 'model.safetensors'), out);
  return dir;
}

async function logitsOf(model: Model) {
  const { logits } = await model.forward(IDS, 1, IDS.length);
  return logits.toF32();
}

test('qwen2: q/k/v biases are loaded and applied; o has none', async () => {
  const be = await getBackend('cpu');
  const base = (await loadModel(BUNDLED, { backend: be })).model;
  const bias = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * s) * 0.1);
  const dir = variant((c) => { c.model_type = 'qwen2'; c.architectures = ['Qwen2ForCausalLM']; }, (add) => {
    for (let l = 0; l < 8; l++) {
      add(`model.layers.${l}.self_attn.q_proj.bias`, [256], bias(256, 1 + l));
      add(`model.layers.${l}.self_attn.k_proj.bias`, [64], bias(64, 2 + l));
      add(`model.layers.${l}.self_attn.v_proj.bias`, [64], bias(64, 3 + l));
    }
  });
  try {
    const q = await loadModel(dir, { backend: be });
    const a = q.model.spec.layers[0].sublayers[0];
    assert.ok(a.kind === 'attn' && a.qkvBias && !a.outBias);
    // Layer 0 sees identical inputs in both models, so its values differ from Llama's by exactly the v bias.
    const vq = await (await q.model.forward(IDS, 1, IDS.length, { capture: ['layers.0.attn.v'] })).captured.get('layers.0.attn.v')!.toF32();
    const vb = await (await base.forward(IDS, 1, IDS.length, { capture: ['layers.0.attn.v'] })).captured.get('layers.0.attn.v')!.toF32();
    const vBias = bias(64, 3);
    for (let i = 0; i < vq.length; i++) assert.ok(Math.abs(vq[i] - vb[i] - vBias[i % 64]) < 1e-5, `v[${i}]`);
    // Zero biases must reproduce the Llama logits exactly; non-zero ones must change them.
    const withBias = await logitsOf(q.model);
    const zero = new Map(q.model.weights);
    for (const [n, w] of zero) if (n.endsWith('.bias')) zero.set(n, be.zeros(w.shape, 'f32'));
    const zeroed = await logitsOf(new Model(q.model.spec, be, zero));
    assert.deepEqual(zeroed, await logitsOf(base));
    assert.notDeepEqual(withBias, zeroed);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tied embeddings: lm_head comes from the embedding matrix', async () => {
  const be = await getBackend('cpu');
  const base = (await loadModel(BUNDLED, { backend: be })).model;
  const dir = variant((c) => { c.tie_word_embeddings = true; }, () => {}, ['lm_head.weight']);
  try {
    const tied = (await loadModel(dir, { backend: be })).model;
    assert.equal(tied.spec.tiedEmbeddings, true);
    assert.ok(!tied.weights.has('lm_head.weight'));
    const w = new Map<string, Tensor>(base.weights);
    w.set('lm_head.weight', base.weights.get('embed.weight')!);
    const ref = new Model(base.spec, be, w);
    assert.deepEqual(await logitsOf(tied), await logitsOf(ref));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // A tied checkpoint that still stores lm_head.weight: the copy is expected, not reported as unused.
  const kept = variant((c) => { c.tie_word_embeddings = true; }, () => {});
  try {
    assert.deepEqual((await loadModel(kept, { backend: be })).unusedTensors, []);
  } finally {
    rmSync(kept, { recursive: true, force: true });
  }
});

test('mistral: same weights as llama; a sliding window caps the context', async () => {
  const dir = variant((c) => { c.model_type = 'mistral'; c.sliding_window = 512; }, () => {});
  try {
    const src = readModelSource(dir);
    assert.equal(src.spec.family, 'mistral');
    assert.equal(src.spec.maxContext, 512);
    const be = await getBackend('cpu');
    const m = (await loadModel(dir, { backend: be })).model;
    assert.deepEqual(await logitsOf(m), await logitsOf((await loadModel(BUNDLED, { backend: be })).model));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
