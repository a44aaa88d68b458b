// Runs Brickwork's TypeScript sources directly in Node (no build step): `node --import ./scripts/ts.mjs FILE.ts`.
// Each .ts module is compiled on load with esbuild (types stripped, nothing bundled or renamed), with an
// inline source map so stack traces point at the .ts lines. Unlike general-purpose runners it does not ask
// esbuild to keep function names (`keepNames`), which wraps every closure in a defineProperty call: on
// the per-dispatch paths that cost 10-20% of a decode step's host time (bench/RESULTS.md).

import { register } from 'node:module';

process.setSourceMapsEnabled(true);
register('./ts-hooks.mjs', import.meta.url);
