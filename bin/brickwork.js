#!/usr/bin/env node
// Launcher of the `brickwork` command (package.json "bin"): registers the TypeScript loader
// (scripts/ts.mjs) so Node can load the sources directly (no build step), then runs src/cli/main.ts and
// sets the exit code.

await import('../scripts/ts.mjs');
const { main, finish } = await import('../src/cli/main.ts');
finish(await main(process.argv));
