// Golden parity checks against HF transformers, shared by the CPU and WebGPU test files: token ids,
// logits (full and logsumexp/top-8), every hidden state, and the 40 greedy tokens of a ragged batch.
// Tolerances are the issue's: 1e-3 absolute on logits and hidden states, exact ids and tokens.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { loadModel, openTensors, generate, type Backend } from '../src/index.ts';
import { fixture, readGolden } from './helpers.ts';

const TOL = 1e-3;

export async function checkParity(t: TestContext, name: string, backend: Backend): Promise<void> {
  const fx = fixture(name);
  if ('skip' in fx) return void t.skip(fx.skip);
  const golden = readGolden(fx.golden);
  const g = openTensors(join(fx.golden, 'golden.safetensors'));
  const { model, tokenizer, unusedTensors } = await loadModel(fx.model, { backend: backend });
  const V = model.spec.vocabSize, L = model.spec.layers.length;

  await t.test('every tensor of the checkpoint is used (buffers such as GPT-2 attn.bias are known)', () => {
    assert.deepEqual(unusedTensors, []);
  });

  await t.test('token ids equal HF encoding', () => {
    for (const p of golden.prompts) assert.deepEqual(tokenizer!.encode(p.text).slice(0, 200), p.ids, p.text);
  });

  await t.test('logits, top-8 and hidden states', async () => {
    for (const [i, p] of golden.prompts.entries()) {
      const T = p.ids.length;
      const capture = i === 1 ? ['embed.out', 'layers.*.resid.post', 'final.norm'] : [];
      const { logits, captured } = await model.forward(Int32Array.from(p.ids), 1, T, { capture });
      const lg = await logits.toF32();
      const lse = g.readF32(`p${i}.logsumexp`), top = g.read(`p${i}.top8.indices`).data, topv = g.readF32(`p${i}.top8.values`);
      for (let r = 0; r < T; r++) {
        const row = lg.subarray(r * V, (r + 1) * V);
        let mx = -Infinity;
        for (const x of row) mx = Math.max(mx, x);
        let z = 0;
        for (const x of row) z += Math.exp(x - mx);
        assert.ok(Math.abs(mx + Math.log(z) - lse[r]) < TOL, `p${i} row ${r}: logsumexp ${mx + Math.log(z)} vs ${lse[r]}`);
        const order = Array.from(row.keys()).sort((a, b) => row[b] - row[a]).slice(0, 8);
        for (let j = 0; j < 8; j++) {
          assert.ok(Math.abs(row[top[r * 8 + j]] - topv[r * 8 + j]) < TOL, `p${i} row ${r} top${j} value`);
          // Indices must match unless two logits tie within the tolerance.
          if (order[j] !== top[r * 8 + j]) assert.ok(Math.abs(row[order[j]] - row[top[r * 8 + j]]) < TOL, `p${i} row ${r}: top-8 index ${j} is ${order[j]}, HF ${top[r * 8 + j]}`);
        }
      }
      if (g.has(`p${i}.logits`)) {
        const gl = g.readF32(`p${i}.logits`);
        let worst = 0;
        for (let k = 0; k < gl.length; k++) worst = Math.max(worst, Math.abs(gl[k] - lg[k]));
        assert.ok(worst < TOL, `p${i} full logits max |diff| ${worst}`);
      }
      if (i === 1) {
        const names = ['embed.out', ...Array.from({ length: L - 1 }, (_, l) => `layers.${l}.resid.post`), 'final.norm'];
        for (const [l, n] of names.entries()) {
          const h = await captured.get(n)!.toF32(), gh = g.readF32(`p1.hidden.${l}`);
          assert.equal(h.length, gh.length, n);
          let worst = 0;
          for (let k = 0; k < gh.length; k++) worst = Math.max(worst, Math.abs(gh[k] - h[k]));
          assert.ok(worst < TOL, `hidden ${l} (${n}) max |diff| ${worst}`);
        }
      }
      logits.dispose();
    }
  });

  await t.test('40 greedy tokens, all prompts in one ragged batch', async () => {
    const r = await generate(model, golden.prompts.map((p) => p.ids), { maxNewTokens: 40, sampling: { greedy: true }, stopTokens: [] });
    golden.prompts.forEach((p, i) => {
      assert.deepEqual(r.tokens[i], p.greedy_next_40, `prompt ${i}`);
      assert.equal(tokenizer!.decode(r.tokens[i]), p.greedy_text, `prompt ${i} text`);
    });
  });

  await t.test('greedy one prompt at a time equals the batch', async () => {
    const p = golden.prompts[2];
    const r = await generate(model, [p.ids], { maxNewTokens: 12, sampling: { greedy: true }, stopTokens: [] });
    assert.deepEqual(r.tokens[0], p.greedy_next_40.slice(0, 12));
  });
  g.close();
}
