// Golden parity of the CPU backend against HF transformers for tiny-llama (bundled), tiny-gpt2 and
// tiny-mixtral (shared fixtures); the checks themselves are in parity-check.ts.

import { test } from 'node:test';
import { getBackend } from '../src/index.ts';
import { checkParity } from './parity-check.ts';

for (const name of ['tiny-llama', 'tiny-gpt2', 'tiny-mixtral']) {
  test(`parity: ${name}`, async (t) => checkParity(t, name, await getBackend('cpu')));
}
