// Progress reporting on stderr for long CLI runs (perplexity, later training and sweeps). On a
// terminal it draws a cli-progress bar with a rate and an ETA; when stderr is a pipe or a file it
// prints an occasional plain line instead (carriage-return redraws would be garbage in a log), and
// nothing at all for runs shorter than the interval.

import cliProgress from 'cli-progress';
import { fmtDuration, fmtInt, fmtRate } from './format.ts';

export interface Progress {
  /** Report `done` units of `total`. */
  update(done: number, total?: number): void;
  /** Finish: remove the bar (the caller prints the result). */
  stop(): void;
}

export interface ProgressOptions {
  /** Unit shown after the counts, e.g. 'tokens'. */
  unit: string;
  /** Seconds between plain lines when stderr is not a terminal. */
  plainEverySeconds?: number;
  stream?: NodeJS.WriteStream;
}

/**
 * A progress reporter for `total` units of work.
 * @example
 *   const p = progress('ppl', 65535, { unit: 'tokens' }); p.update(4096); …; p.stop();
 */
export function progress(label: string, total: number, opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  const t0 = performance.now();
  const rate = (done: number) => done / Math.max(1e-9, (performance.now() - t0) / 1000);
  if (!stream.isTTY) {
    const every = (opts.plainEverySeconds ?? 10) * 1000;
    let last = t0;
    return {
      update(done, tot = total) {
        total = tot;
        const now = performance.now();
        if (now - last < every || done >= total) return;
        last = now;
        const pct = Math.floor((100 * done) / total);
        stream.write(`${label}: ${fmtInt(done)}/${fmtInt(total)} ${opts.unit} (${pct}%), ${fmtRate(rate(done))} ${opts.unit}/s, ${fmtDuration(now - t0)} elapsed\n`);
      },
      stop() {},
    };
  }
  const bar = new cliProgress.SingleBar({
    stream,
    format: `${label} [{bar}] {percentage}% | {done}/{all} ${opts.unit} | {rate}/s | ETA {eta_formatted}`,
    barCompleteChar: '#',
    barIncompleteChar: '.',
    barsize: 24,
    hideCursor: true,
    clearOnComplete: true,
    etaBuffer: 20,
    linewrap: true,
  });
  bar.start(total, 0, { done: '0', all: fmtInt(total), rate: '-' });
  return {
    update(done, tot = total) {
      if (tot !== total) { total = tot; bar.setTotal(total); }
      bar.update(done, { done: fmtInt(done), all: fmtInt(total), rate: fmtRate(rate(done)) });
    },
    stop() {
      bar.stop();
    },
  };
}
