// Bundles src/browser.ts into one ES module for browsers with esbuild (well under a second):
//   node --import ./scripts/ts.mjs scripts/build-browser.ts [OUT_DIR]     (default .browser-build/, git-ignored)
// Node-only code is reached only through dynamic imports guarded by the environment (Dawn's `webgpu`
// package; node:os and node:worker_threads for CPU threads). They stay external, and the build fails if
// any module imports one of them statically.

import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

const REPO = fileURLToPath(new URL('../', import.meta.url));
const NODE_ONLY = ['node:*', 'webgpu'];

/** Build the bundle; returns the path of the .js file. */
export async function buildBrowser(outDir = join(REPO, '.browser-build')): Promise<string> {
  const outfile = join(outDir, 'brickwork.js');
  const { metafile } = await build({
    entryPoints: [join(REPO, 'src', 'browser.ts')],
    outfile,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    external: NODE_ONLY,
    sourcemap: true,
    metafile: true,
    logLevel: 'error',
  });
  const staticImports = Object.entries(metafile.inputs).flatMap(([file, input]) =>
    input.imports.filter((i) => i.external && i.kind !== 'dynamic-import').map((i) => `${file} imports '${i.path}'`));
  if (staticImports.length) throw new Error(`the browser bundle must not import Node modules statically:\n  ${staticImports.join('\n  ')}`);
  return outfile;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const t0 = performance.now();
  const file = await buildBrowser(process.argv[2] ? resolve(process.argv[2]) : undefined);
  console.log(`${file} (${Math.round(performance.now() - t0)} ms)`);
}
