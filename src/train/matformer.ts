// MatFormer joint training: each step trains one granularity — the g-th nested width of every nested
// FFN — chosen by cycling through them or by sampling from (seed, step), so all nested submodels learn
// together (Devvrit et al., 2023). Validation runs at full width.

import { sublayerNames, type ModelSpec } from '../model/spec.ts';
import type { ForwardOptions } from '../model/assemble.ts';
import { UsageError } from '../util/errors.ts';
import { mix } from './data.ts';

/**
 * The per-step forward options that pick a MatFormer granularity, for `TrainOptions.forwardAt`.
 * @example
 *   await train(model, data, { ...opts, forwardAt: nestedWidthSchedule(model.spec, 'cycle', 1) });
 */
export function nestedWidthSchedule(spec: ModelSpec, mode: 'cycle' | 'sample', seed: number): (step: number) => Pick<ForwardOptions, 'ffnWidth'> {
  const nested = new Map<string, number[]>();
  spec.layers.forEach((l, i) => {
    const names = sublayerNames(l);
    l.sublayers.forEach((s, j) => { if (s.kind === 'ffn' && s.nested) nested.set(`layers.${i}.${names[j]}`, s.nested); });
  });
  if (nested.size === 0) throw new UsageError('nested-width training needs MatFormer FFNs (spec field `nested` on an ffn sublayer)', 'add e.g. "nested": [128, 256, 512] to the FFNs of the spec');
  const G = Math.max(...[...nested.values()].map((n) => n.length));
  return (step) => {
    if (step < 0) return {}; // validation: full width
    // NOTE: sampled through the same 32-bit mix as the data windows; a plain multiply would leave the low
    // bits of g a permutation of step's, a fixed cycle whenever G is a power of two.
    const g = mode === 'cycle' ? step % G : mix(seed, step, 0x6d66);
    return { ffnWidth: (_layer, prefix) => { const n = nested.get(prefix); return n ? n[Math.min(n.length - 1, (g % G) * n.length / G | 0)] : undefined; } };
  };
}
