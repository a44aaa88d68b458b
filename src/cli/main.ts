// Entry point of the `brickwork` command: builds the commander program from the command files and
// maps failures to exit codes: 0 ok, 1 a Brickwork error (message + hint, no stack) or any other error
// (stack only with BRICKWORK_DEBUG), 2 a usage error commander caught. The CLI imports only the public
// API (src/index.ts), node:* and npm packages. Run directly (`node --import ./scripts/ts.mjs src/cli/main.ts`) or via bin/.

import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { BrickworkError } from '../index.ts';
import { convertCommand } from './convert.ts';
import { generateCommand } from './generate.ts';
import { inspectCommand } from './inspect.ts';
import { pplCommand } from './ppl.ts';
import { sweepCommand } from './sweep.ts';
import { trainCommand } from './train.ts';
import { compareCommand } from './compare.ts';

/** Every command, in the order `--help` lists them. Adding one: write `<name>.ts` exporting a Command, list it here. */
const COMMANDS: (() => Command)[] = [generateCommand, pplCommand, sweepCommand, trainCommand, compareCommand, inspectCommand, convertCommand];

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

export function buildProgram(): Command {
  const program = new Command('brickwork')
    .description('Transformer language models block by block: run, measure and inspect Hugging Face checkpoints.')
    .version(version())
    .showHelpAfterError('(add --help for usage)')
    .exitOverride();
  for (const make of COMMANDS) {
    const cmd = make();
    // Commander would call process.exit on a usage error; we want to decide the exit code ourselves.
    cmd.exitOverride().showHelpAfterError(`(run 'brickwork ${cmd.name()} --help' for usage)`);
    program.addCommand(cmd);
  }
  return program;
}

const debug = () => !!process.env.BRICKWORK_DEBUG && process.env.BRICKWORK_DEBUG !== '0';

/**
 * Run the CLI on an argv (node-style: [node, script, ...args]) and return the exit code; never throws.
 * @example
 *   process.exitCode = await main(['node', 'brickwork', 'inspect', '--json']);
 */
export async function main(argv: string[] = process.argv): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (e) {
    // Commander has already printed its message (or the help/version it was asked for).
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    const err = e instanceof Error ? e : new Error(String(e));
    if (e instanceof BrickworkError) {
      process.stderr.write(`error: ${err.message}\n`);
      if (debug()) process.stderr.write(`${err.stack}\n`);
    } else {
      process.stderr.write(`error: ${err.message}\n`);
      process.stderr.write(debug() ? `${err.stack}\n` : '(set BRICKWORK_DEBUG=1 for the stack trace)\n');
    }
    return 1;
  }
}

/**
 * Set the exit code and make sure the process ends: normally it exits on its own once stdout is
 * flushed; if something keeps the event loop alive (a GPU device), a timer that does not itself hold
 * the loop ends it a moment later.
 */
export function finish(code: number): void {
  process.exitCode = code;
  setTimeout(() => process.exit(code), 1500).unref();
}

// A closed pipe (`brickwork generate … | head -1`) is not an error worth a stack trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
  throw e;
});

const isDirectRun = (() => {
  try {
    return !!process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
})();
if (isDirectRun) finish(await main());
