// Shared body of the perplexity parity tests (test/ppl-*.test.ts).

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { encodeLong, getBackend, loadModel, perplexity } from '../src/index.ts';
import { WIKITEXT_TEST, fixture, readGolden } from './helpers.ts';

export async function checkPerplexity(t: TestContext, name: string): Promise<void> {
  const fx = fixture(name);
  if ('skip' in fx) return void t.skip(fx.skip);
  if (!existsSync(WIKITEXT_TEST)) return void t.skip(`WikiText-2 test file not found at ${WIKITEXT_TEST}; set BRICKWORK_DATA to the shared data folder`);
  const g = readGolden(fx.golden).perplexity;
  const { model, tokenizer } = await loadModel(fx.model, { backend: await getBackend('cpu') });
  const ids = encodeLong(tokenizer!, readFileSync(WIKITEXT_TEST, 'utf8'));
  const r = await perplexity(model, ids, { window: g.window, maxTokens: g.tokens_scored });
  assert.equal(r.tokensScored, g.tokens_scored);
  const rel = Math.abs(r.ppl - g.ppl) / g.ppl;
  t.diagnostic(`${name}: ppl ${r.ppl.toFixed(4)} vs HF ${g.ppl.toFixed(4)} (relative difference ${rel.toExponential(2)})`);
  assert.ok(rel < 1e-3, `perplexity ${r.ppl} vs golden ${g.ppl}: relative difference ${rel}`);
}
