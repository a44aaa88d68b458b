// The library in a real browser: src/browser.ts is bundled (scripts/build-browser.ts), served with the
// bundled model by a local HTTP server, and run by headless Chromium (playwright-core, the system's
// Chromium; WebGPU on SwiftShader where there is no GPU). In the page the model is loaded over fetch and
// run on WebGPU; logits and greedy tokens are checked against the HF golden file with the parity
// tolerances. The fetch source is also checked in Node. Skips, saying why, without Chromium or WebGPU.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join } from 'node:path';
import { CheckpointError, getBackend, loadModel, loadModelFromFiles, loadModelFromUrl, memoryFiles, openTensors } from '../src/index.ts';
import { buildBrowser } from '../scripts/build-browser.ts';
import { BUNDLED, REPO, readGolden } from './helpers.ts';

const CHROMIUM = process.env.BRICKWORK_CHROMIUM ?? '/usr/bin/chromium';
// WebGPU on SwiftShader; no sandbox because CI runs as root.
const CHROMIUM_ARGS = ['--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--use-angle=swiftshader', '--no-sandbox',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const GOLDEN = join(REPO, 'test', 'golden', 'tiny-llama');
const TOL = 1e-3;
// SwiftShader is slow (seconds per forward, about linear in the rows): logits for the first 4 prompts (not
// the 200-token one), and greedy tokens for a ragged batch of the first 3.
const LOGIT_PROMPTS = 4;
const GREEDY_PROMPTS = 3;
const NEW_TOKENS = 8;
const PAGE_TIMEOUT_MS = 480_000;

// Runs in the page: everything a web app does, through the bundle's public API only.
const PAGE_JS = `
import * as bw from '/brickwork.js';

const b64 = (f32) => {
  const u8 = new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength);
  let s = '';
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(s);
};

export async function run({ texts, prompts, greedy, newTokens }) {
  let backend;
  try {
    backend = await bw.getBackend('webgpu');
  } catch (e) {
    if (e instanceof bw.NoWebGpuError) return { skip: e.message.split('\\n')[0] };
    throw e;
  }
  try {
    let t0 = performance.now();
    const lap = () => Math.round(-t0 + (t0 = performance.now()));
    const { model, tokenizer } = await bw.loadModelFromUrl('/models/tiny-llama/', { backend });
    const ms = { load: lap(), forward: [], generate: 0 };
    const logits = [];
    for (const ids of prompts) {
      const out = await model.forward(Int32Array.from(ids), 1, ids.length);
      logits.push(b64(await out.logits.toF32()));
      out.logits.dispose();
      ms.forward.push(lap());
    }
    const r = await bw.generate(model, prompts.slice(0, greedy), { maxNewTokens: newTokens, sampling: { greedy: true }, stopTokens: [] });
    ms.generate = lap();
    return { adapter: backend.info, ids: texts.map((t) => tokenizer.encode(t)), logits, tokens: r.tokens, vocab: model.spec.vocabSize, ms };
  } finally {
    backend.destroy();
  }
}
`;
/** What run() answers: a reason to skip, or token ids, logits (f32 bytes in base64), greedy tokens and timings. */
type PageResult = { skip: string } | {
  adapter: object; ids: number[][]; logits: string[]; tokens: number[][]; vocab: number; ms: { load: number; forward: number[]; generate: number };
};
const PAGE_HTML = '<!doctype html><meta charset="utf-8"><title>brickwork browser test</title>';

const TYPES: Record<string, string> = { '': 'text/html', '.js': 'text/javascript', '.json': 'application/json', '.map': 'application/json' };

/** Serves the page, its script, the bundle (and map) and the files of models/tiny-llama; 404 otherwise. */
async function serve(bundle: string): Promise<{ server: Server; base: string }> {
  const files = new Map<string, () => string | Buffer>([
    ['/', () => PAGE_HTML],
    ['/check.js', () => PAGE_JS],
    ['/brickwork.js', () => readFileSync(bundle)],
    ['/brickwork.js.map', () => readFileSync(`${bundle}.map`)],
    ...readdirSync(BUNDLED).map((f): [string, () => Buffer] => [`/models/tiny-llama/${f}`, () => readFileSync(join(BUNDLED, f))]),
  ]);
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const body = files.get(path);
    if (!body) return void res.writeHead(404).end('not found');
    res.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream' });
    res.end(body());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}/` };
}

function stop(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Logits of golden prompt `i` (T rows of V) against HF: logsumexp, top-8, and the full rows where stored. */
function checkLogits(g: ReturnType<typeof openTensors>, i: number, lg: Float32Array, V: number): void {
  const T = lg.length / V;
  const lse = g.readF32(`p${i}.logsumexp`), top = g.read(`p${i}.top8.indices`).data, topv = g.readF32(`p${i}.top8.values`);
  for (let r = 0; r < T; r++) {
    const row = lg.subarray(r * V, (r + 1) * V);
    const mx = row.reduce((a, x) => Math.max(a, x), -Infinity);
    const z = mx + Math.log(row.reduce((a, x) => a + Math.exp(x - mx), 0));
    assert.ok(Math.abs(z - lse[r]) < TOL, `p${i} row ${r}: logsumexp ${z} vs ${lse[r]}`);
    const order = Array.from(row.keys()).sort((a, b) => row[b] - row[a]);
    for (let j = 0; j < 8; j++) {
      const want = top[r * 8 + j];
      assert.ok(Math.abs(row[want] - topv[r * 8 + j]) < TOL, `p${i} row ${r} top${j} value ${row[want]} vs ${topv[r * 8 + j]}`);
      // Indices must match unless two logits tie within the tolerance.
      if (order[j] !== want) assert.ok(Math.abs(row[order[j]] - row[want]) < TOL, `p${i} row ${r}: top-8 index ${j} is ${order[j]}, HF ${want}`);
    }
  }
  if (g.has(`p${i}.logits`)) {
    const gl = g.readF32(`p${i}.logits`);
    const worst = gl.reduce((a, x, k) => Math.max(a, Math.abs(x - lg[k])), 0);
    assert.ok(worst < TOL, `p${i} full logits max |diff| ${worst}`);
  }
}

test('browser bundle, and loading a model over HTTP', { timeout: 600_000 }, async (t) => {
  const bundle = await buildBrowser();
  const { server, base } = await serve(bundle);
  try {
    await t.test('in Node, a model fetched over HTTP equals the one read from its folder', async () => {
      const backend = await getBackend('cpu');
      const url = await loadModelFromUrl(`${base}models/tiny-llama`, { backend });
      const dir = await loadModel(BUNDLED, { backend });
      assert.deepEqual(url.source.spec, dir.source.spec);
      assert.equal(url.source.dir, `${base}models/tiny-llama/`);
      assert.equal(url.storedDtype, dir.storedDtype);
      const ids = url.tokenizer!.encode('The quick brown fox');
      assert.deepEqual(ids, dir.tokenizer!.encode('The quick brown fox'));
      const a = await (await url.model.forward(Int32Array.from(ids), 1, ids.length)).logits.toF32();
      const b = await (await dir.model.forward(Int32Array.from(ids), 1, ids.length)).logits.toF32();
      assert.deepEqual(a, b);
    });

    await t.test('files that cannot be had are CheckpointErrors naming them', async () => {
      const backend = await getBackend('cpu-reference');
      const named = (file: RegExp | string, why: RegExp) => (e: unknown) =>
        e instanceof CheckpointError && (typeof file === 'string' ? e.file === file : file.test(e.file)) && why.test(e.message) && e.hint !== undefined;
      await assert.rejects(loadModelFromUrl(`${base}models/absent/`, { backend }), named(`${base}models/absent/model.safetensors`, /not found \(HTTP 404\)/));
      const failing = async () => new Response('', { status: 500, statusText: 'Internal Server Error' });
      await assert.rejects(loadModelFromUrl('http://example.invalid/m/', { backend, fetch: failing }), named(/^http:\/\/example\.invalid\/m\/[a-z_.]+$/, /HTTP 500 Internal Server Error/));
      const config = readFileSync(join(BUNDLED, 'config.json'), 'utf8');
      await assert.rejects(loadModelFromFiles(memoryFiles({ 'config.json': config }, 'upload'), { backend }), named('upload/model.safetensors', /not found/));
    });

    await t.test('in Chromium on WebGPU: golden logits and greedy tokens', async (t) => {
      if (!existsSync(CHROMIUM)) return void t.skip(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set BRICKWORK_CHROMIUM)`);
      const golden = readGolden(GOLDEN);
      const prompts = golden.prompts.slice(0, LOGIT_PROMPTS);
      const { chromium } = await import('playwright-core');
      const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
      // A page that never answers must not hang the run: closing the browser fails the evaluate below.
      let late = false;
      const guard = setTimeout(() => void ((late = true), browser.close()), PAGE_TIMEOUT_MS);
      try {
        const page = await browser.newPage();
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(e.message));
        await page.goto(base);
        const args = { texts: golden.prompts.map((p) => p.text), prompts: prompts.map((p) => p.ids), greedy: GREEDY_PROMPTS, newTokens: NEW_TOKENS };
        const r = await page.evaluate(`import('/check.js').then((m) => m.run(${JSON.stringify(args)}))`).catch((e: Error) => {
          throw late ? new Error(`the page did not answer within ${PAGE_TIMEOUT_MS / 1000} s`) : e;
        }) as PageResult;
        assert.deepEqual(errors, []);
        if ('skip' in r) return void t.skip(`no WebGPU in Chromium: ${r.skip}`);
        t.diagnostic(`adapter ${JSON.stringify(r.adapter)}: load ${r.ms.load} ms, forward ${r.ms.forward.join(', ')} ms, ${NEW_TOKENS} greedy tokens ${r.ms.generate} ms`);
        golden.prompts.forEach((p, i) => assert.deepEqual(r.ids[i].slice(0, 200), p.ids, `token ids of prompt ${i}`));
        const g = openTensors(join(GOLDEN, 'golden.safetensors'));
        try {
          r.logits.forEach((b64, i) => checkLogits(g, i, new Float32Array(Uint8Array.from(Buffer.from(b64, 'base64')).buffer), r.vocab));
        } finally {
          g.close();
        }
        assert.equal(r.tokens.length, GREEDY_PROMPTS);
        r.tokens.forEach((got, i) => assert.deepEqual(got, golden.prompts[i].greedy_next_40.slice(0, NEW_TOKENS), `greedy tokens of prompt ${i}`));
      } finally {
        clearTimeout(guard);
        await browser.close();
      }
    });
  } finally {
    await stop(server);
  }
});
