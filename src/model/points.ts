// Activation point names and patterns. Names are dotted paths (`layers.3.ffn.out`); patterns may use
// `*` (one path segment, or part of one), `**` (any number of segments) and numeric ranges `2-5`
// in a segment (`layers.2-5.attn.out`).

/** A compiled point pattern. */
export type PointMatcher = (name: string) => boolean;

export function compilePattern(pattern: string): PointMatcher {
  const segs = pattern.split('.');
  const parts = segs.map((seg) => {
    if (seg === '**') return '(?:[^.]+(?:\\.[^.]+)*)';
    const range = /^(\d+)-(\d+)$/.exec(seg);
    if (range) {
      const [lo, hi] = [Number(range[1]), Number(range[2])];
      const alts: string[] = [];
      for (let i = lo; i <= hi; i++) alts.push(String(i));
      return `(?:${alts.join('|')})`;
    }
    return seg.split('*').map((s) => s.replace(/[\\^$+?()[\]{}|.]/g, '\\$&')).join('[^.]*');
  });
  const re = new RegExp(`^${parts.join('\\.')}$`);
  return (name) => re.test(name);
}

/** Whether any of the patterns matches the name. */
export function matchesAny(matchers: PointMatcher[], name: string): boolean {
  return matchers.some((m) => m(name));
}
