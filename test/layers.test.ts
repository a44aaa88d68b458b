// The layering lint itself: passes on the real tree, and catches an upward import and a CLI file
// importing an internal module.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './helpers.ts';

const lint = (dir?: string) => spawnSync(process.execPath, [join(REPO, 'scripts', 'check-layers.mjs'), ...(dir ? [dir] : [])], { encoding: 'utf8' });

test('layering: the source tree passes', () => {
  const r = lint();
  assert.equal(r.status, 0, r.stderr);
});

test('layering: upward and user-facing violations are reported', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bw-layers-'));
  try {
    for (const f of ['tensor', 'runtime', 'cli', 'bricks', 'model']) mkdirSync(join(dir, f));
    writeFileSync(join(dir, 'runtime', 'gen.ts'), 'export const x = 1;\n');
    writeFileSync(join(dir, 'model', 'spec.ts'), 'export type S = 1;\n');
    writeFileSync(join(dir, 'tensor', 'bad.ts'), "import { x } from '../runtime/gen.ts';\n");
    writeFileSync(join(dir, 'cli', 'main.ts'), "import { x } from '../runtime/gen.ts';\n");
    writeFileSync(join(dir, 'bricks', 'ok.ts'), "import type { S } from '../model/spec.ts';\n");
    const r = lint(dir);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /tensor\/bad\.ts:1: tensor\/ may not import from runtime\//);
    assert.match(r.stderr, /cli\/main\.ts:1: cli\/ is user-facing/);
    assert.doesNotMatch(r.stderr, /bricks\/ok\.ts/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
