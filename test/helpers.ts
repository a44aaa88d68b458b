// Shared test helpers: where the repo, the bundled model and the shared fixtures are, and a loader
// for golden files. Fixture-dependent tests skip with a clear message when the fixtures are absent.

import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join, resolve } from 'node:path';

export const REPO = fileURLToPath(new URL('../', import.meta.url));
export const BUNDLED = join(REPO, 'models', 'tiny-llama');
export const FIXTURES = resolve(REPO, process.env.BRICKWORK_FIXTURES ?? '../shared/fixtures');
export const DATA = resolve(REPO, process.env.BRICKWORK_DATA ?? '../shared/data');
export const WIKITEXT_TEST = join(DATA, 'wikitext-2', 'raw', 'test.txt');

/** Model folder and golden folder of a fixture, or a skip reason. The bundled model needs no fixtures. */
export function fixture(name: string): { model: string; golden: string } | { skip: string } {
  if (name === 'tiny-llama') return { model: BUNDLED, golden: join(REPO, 'test', 'golden', 'tiny-llama') };
  const dir = join(FIXTURES, name);
  if (!existsSync(join(dir, 'golden.json'))) return { skip: `fixture ${name} not found at ${dir}; set BRICKWORK_FIXTURES to the shared fixtures folder` };
  return { model: dir, golden: dir };
}

export interface GoldenPrompt { text: string; ids: number[]; greedy_next_40: number[]; greedy_text: string }
export interface Golden {
  prompts: GoldenPrompt[];
  perplexity: { window: number; tokens_scored: number; ppl: number };
}

export function readGolden(dir: string): Golden {
  return JSON.parse(readFileSync(join(dir, 'golden.json'), 'utf8')) as Golden;
}

/** A seeded PRNG for test data (mulberry32). */
export function rand(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
