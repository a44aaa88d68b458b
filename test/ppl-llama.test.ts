// Perplexity parity for tiny-llama on WikiText-2 test: within 0.1% of HF's golden value, over the
// exact windows golden.json describes. One file per model so the test runner can run them in parallel.

import { test } from 'node:test';
import { checkPerplexity } from './ppl-check.ts';

test('perplexity parity: tiny-llama', (t) => checkPerplexity(t, 'tiny-llama'));
