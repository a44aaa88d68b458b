#!/usr/bin/env node
// Enforces the one-way layering of src/ (see DESIGN.md): a folder may import only from folders above
// it in LAYERS. Two exceptions: `import type` of model/spec.ts (the plain data description every
// layer shares) is allowed from any layer, and user-facing folders import only src/index.ts.
// Prints every violation with file and line; exits 1 if there is any.

import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const LAYERS = ['util', 'tensor', 'backends', 'bricks', 'model', 'io', 'runtime', 'analysis', 'surgery', 'train', 'eval'];
const USER_FACING = ['cli', 'server', 'web'];
const SHARED_TYPES = ['model/spec.ts'];

const src = process.argv[2] ? resolve(process.argv[2]) : resolve(dirname(fileURLToPath(import.meta.url)), '..', 'src');

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* files(p);
    else if (p.endsWith('.ts')) yield p;
  }
}

const top = (file) => relative(src, file).split(sep)[0];
const problems = [];
for (const file of files(src)) {
  const from = top(file);
  if (from.endsWith('.ts')) continue; // src/index.ts: the public API may import anything
  const lines = readFileSync(file, 'utf8').split('\n');
  lines.forEach((line, i) => {
    const m = /^\s*(import|export)\s+(type\s+)?[^'"]*?from\s+['"](\.[^'"]+)['"]/.exec(line) ?? /^\s*import\s+['"](\.[^'"]+)['"]/.exec(line);
    if (!m) return;
    const spec = m[3] ?? m[1];
    const typeOnly = Boolean(m[2]);
    const target = resolve(dirname(file), spec);
    const rel = relative(src, target).split(sep).join('/');
    const to = rel.split('/')[0];
    const where = `${relative(resolve(src, '..'), file)}:${i + 1}`;
    if (USER_FACING.includes(from)) {
      if (rel !== 'index.ts' && to !== from) problems.push(`${where}: ${from}/ is user-facing and may import only src/index.ts, found '${spec}'`);
      return;
    }
    if (to === from) return;
    if (typeOnly && SHARED_TYPES.includes(rel)) return;
    const a = LAYERS.indexOf(from), b = LAYERS.indexOf(to);
    if (a < 0) return problems.push(`${where}: folder src/${from}/ is not in the layer list of scripts/check-layers.mjs`);
    if (b < 0 || b > a) problems.push(`${where}: ${from}/ may not import from ${to.endsWith('.ts') ? to : to + '/'} (layers flow ${LAYERS.join(' → ')})`);
  });
}

if (problems.length) {
  console.error(`layering: ${problems.length} violation(s)\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log('layering: ok');
