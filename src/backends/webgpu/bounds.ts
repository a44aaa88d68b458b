// A bounds checker for WGSL kernels (like a sanitizer): rewrites every index into a storage array,
// a workgroup array and the parameter block so that an index outside the array is counted per access
// site (and replaced by 0) instead of being clamped silently by the driver or read past the buffer.
// WebGpuBackend runs its kernels through it when created with { checkBounds: true } (or with
// BRICKWORK_WEBGPU_CHECK_BOUNDS=1) and reports the first kernel that went out of bounds.

/** Binding of the violation counters: group 1, 64 u32 per dispatch (one per access site, the last shared). */
export const BOUNDS_SITES = 64;

const COUNTERS = `@group(1) @binding(0) var<storage, read_write> bw_oob: array<atomic<u32>, ${BOUNDS_SITES}>;
fn bw_chk(i: u32, n: u32, site: u32) -> u32 {
  if (i < n) { return i; }
  atomicAdd(&bw_oob[min(site, ${BOUNDS_SITES - 1}u)], 1u);
  return 0u;
}
`;

/** Sizes of the index levels of a WGSL type: array<T, N> → [N, …T], vecK<T> → [K], anything else → []. */
function dims(type: string): number[] {
  const t = type.trim();
  const vec = /^vec([234])\s*</.exec(t);
  if (vec) return [Number(vec[1])];
  if (!t.startsWith('array<')) return [];
  // Split "array<ELEM, N>" at its last top-level comma.
  const body = t.slice(6, t.lastIndexOf('>'));
  let depth = 0, comma = -1;
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c === '<') depth++;
    else if (c === '>') depth--;
    else if (c === ',' && depth === 0) comma = i;
  }
  if (comma < 0) return [];
  const n = Number(body.slice(comma + 1).trim().replace(/u$/, ''));
  return Number.isInteger(n) ? [n, ...dims(body.slice(0, comma))] : [];
}

/** Index of the `]` that closes the `[` at `open`. */
function closing(text: string, open: number): number {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '[') depth++;
    else if (text[i] === ']' && --depth === 0) return i;
  }
  throw new Error(`unbalanced [ at ${open} in WGSL: ${text.slice(open, open + 60)}`);
}

/**
 * The WGSL with every array index checked, and the text of each access site (the site number is the
 * position in that list). Storage arrays are checked against arrayLength (their first index only; a
 * further index selects a vector component), workgroup arrays against each declared size, and the
 * parameter accessor `u(i)` against the 64 vec4 of the parameter block.
 */
export function checkBounds(wgsl: string): { code: string; sites: string[] } {
  const arrays = new Map<string, number[] | 'storage'>();
  for (const m of wgsl.matchAll(/var<storage\s*,\s*(?:read|read_write)>\s+(\w+)\s*:\s*array</g)) arrays.set(m[1], 'storage');
  for (const m of wgsl.matchAll(/var<workgroup>\s+(\w+)\s*:\s*([^;]+);/g)) {
    const d = dims(m[2]);
    if (d.length) arrays.set(m[1], d);
  }
  const sites: string[] = [];
  const site = (text: string) => { sites.push(text.replace(/\s+/g, ' ').slice(0, 120)); return sites.length - 1; };
  const names = [...arrays.keys()];
  const pattern = `(?<![\\w.])(${names.join('|')})\\s*\\[`;

  const rewrite = (text: string): string => {
    if (!names.length) return text;
    const re = new RegExp(pattern, 'g');
    let out = '';
    let at = 0;
    for (;;) {
      re.lastIndex = at;
      const m = re.exec(text);
      if (!m) break;
      const name = m[1];
      const kind = arrays.get(name)!;
      out += text.slice(at, m.index) + name;
      let open = m.index + m[0].length - 1;
      const levels = kind === 'storage' ? 1 : kind.length;
      let level = 0;
      for (;;) {
        const close = closing(text, open);
        const inner = rewrite(text.slice(open + 1, close));
        const bound = kind === 'storage' ? `arrayLength(&${name})` : `${kind[level]}u`;
        out += `[bw_chk(u32(${inner}), ${bound}, ${site(`${name}${'[…]'.repeat(level)}[${text.slice(open + 1, close)}]`)}u)]`;
        at = close + 1;
        level++;
        if (level >= levels) break;
        const next = /^\s*\[/.exec(text.slice(at));
        if (!next) break;
        open = at + next[0].length - 1;
      }
    }
    return out + text.slice(at);
  };

  let code = rewrite(wgsl);
  // The parameter block: struct Params { w: array<vec4<u32>, N> }, read through u(i).
  const param = /fn u\(i: u32\) -> u32 \{ return p\.w\[i \/ 4u\]\[i % 4u\]; \}/;
  const words = /struct Params \{ w: array<vec4<u32>, (\d+)> \}/.exec(code)?.[1];
  if (words && param.test(code)) code = code.replace(param, `fn u(i: u32) -> u32 { return p.w[bw_chk(i / 4u, ${words}u, ${site('p.w[i / 4u] (kernel parameter)')}u)][i % 4u]; }`);
  const head = /^(?:\s*(?:enable|requires|diagnostic)\b[^;]*;)*/.exec(code)![0]; // directives come first
  return { code: head ? `${head}\n${COUNTERS}${code.slice(head.length)}` : COUNTERS + code, sites };
}
