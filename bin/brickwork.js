#!/usr/bin/env node
// Launcher of the `brickwork` command (package.json "bin"): registers tsx so Node can load the
// TypeScript sources directly (no build step), then runs src/cli/main.ts and sets the exit code.

import { register } from 'tsx/esm/api';

register();
const { main, finish } = await import('../src/cli/main.ts');
finish(await main(process.argv));
