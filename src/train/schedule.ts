// Learning-rate schedules: linear warm-up then cosine decay to a floor (the GPT-3 / nanoGPT shape),
// or constant. A schedule maps a 0-based step to a learning rate.

export interface ScheduleOptions {
  /** Peak learning rate. */
  lr: number;
  /** Steps of linear warm-up from lr/warmup to lr. */
  warmup: number;
  /** Total steps: the cosine reaches `minLr` here. */
  total: number;
  /** Floor of the decay (default lr / 10). */
  minLr?: number;
  kind?: 'cosine' | 'constant';
}

/**
 * @example
 *   const lrAt = warmupCosine({ lr: 1e-3, warmup: 100, total: 2000 });
 *   lrAt(0); // 1e-5
 */
export function warmupCosine(o: ScheduleOptions): (step: number) => number {
  const min = o.minLr ?? o.lr / 10;
  return (step) => {
    if (o.warmup > 0 && step < o.warmup) return (o.lr * (step + 1)) / o.warmup;
    if (o.kind === 'constant') return o.lr;
    if (step >= o.total) return min;
    const t = (step - o.warmup) / Math.max(1, o.total - o.warmup);
    return min + 0.5 * (1 + Math.cos(Math.PI * t)) * (o.lr - min);
  };
}
