// Module hooks for scripts/ts.mjs: compile .ts (and .mts) files with esbuild as they load.

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { transform } from 'esbuild';

const TS = /\.m?ts$/;
const target = `node${process.versions.node.split('.')[0]}`;

export async function load(url, context, next) {
  if (!url.startsWith('file:') || !TS.test(new URL(url).pathname)) return next(url, context);
  const file = fileURLToPath(url);
  const { code } = await transform(await readFile(file, 'utf8'), {
    loader: 'ts', format: 'esm', target, sourcemap: 'inline', sourcefile: file,
  });
  return { format: 'module', source: code, shortCircuit: true };
}
