// Activation point names and patterns. Names are dotted paths (`layers.3.ffn.out`); patterns may use
// `*` (one path segment, or part of one), `**` (any number of segments) and numeric ranges `2-5`
// in a segment (`layers.2-5.attn.out`).

import { UsageError } from '../util/errors.ts';

/** A compiled point pattern. */
export type PointMatcher = (name: string) => boolean;

export function compilePattern(pattern: string): PointMatcher {
  const segs = pattern.split('.');
  const ranges: [number, number][] = []; // one per capture group, in order
  const parts = segs.map((seg) => {
    if (seg === '**') return '(?:[^.]+(?:\\.[^.]+)*)';
    const range = /^(\d+)-(\d+)$/.exec(seg);
    if (range) {
      const [lo, hi] = [Number(range[1]), Number(range[2])];
      if (lo > hi) throw new UsageError(`pattern '${pattern}': the range ${seg} runs backwards`, `write it low to high: ${hi}-${lo}`);
      ranges.push([lo, hi]);
      return '(0|[1-9]\\d*)';
    }
    return seg.split('*').map((s) => s.replace(/[\\^$+?()[\]{}|.]/g, '\\$&')).join('[^.]*');
  });
  const re = new RegExp(`^${parts.join('\\.')}$`);
  return (name) => {
    const m = re.exec(name);
    return m !== null && ranges.every(([lo, hi], i) => { const n = Number(m[i + 1]); return n >= lo && n <= hi; });
  };
}

/** Whether any of the patterns matches the name. */
export function matchesAny(matchers: PointMatcher[], name: string): boolean {
  return matchers.some((m) => m(name));
}
