// Timing helper shared by the CPU benchmarks.

/**
 * Best wall time in ms of fn over repetitions filling budgetMs (at least 2 runs; the first only warms
 * up, and is not counted). A run longer than three budgets ends the repetitions.
 */
export function bestMs(fn: () => void, budgetMs: number): number {
  let best = Infinity, spent = 0, runs = 0;
  while (runs < 2 || spent < budgetMs) {
    const t = performance.now();
    fn();
    const dt = performance.now() - t;
    if (runs > 0) best = Math.min(best, dt);
    spent += dt; runs++;
    if (runs >= 2 && dt > 3 * budgetMs) break;
  }
  return best;
}
