// Plain-text formatting for the CLI: aligned tables, key/value blocks, numbers with thousands
// separators, byte sizes and durations. Output is ASCII-only and ANSI-free so it survives pipes,
// log files and terminals without Unicode. Numbers use en-US separators whatever the host locale,
// so outputs (and tests) read the same everywhere.

const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const fixedFmts = new Map<number, Intl.NumberFormat>();

/** 7639296 → "7,639,296". */
export function fmtInt(n: number): string {
  return intFmt.format(n);
}

/** A number with exactly `digits` decimals and thousands separators: 1234.5 → "1,234.50". */
export function fmtFixed(n: number, digits: number): string {
  if (!Number.isFinite(n)) return String(n);
  let f = fixedFmts.get(digits);
  if (!f) fixedFmts.set(digits, (f = new Intl.NumberFormat('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })));
  return f.format(n);
}

/** A rate in units per second, with fewer decimals as it grows (a rate's third digit is noise). */
export function fmtRate(n: number): string {
  if (!Number.isFinite(n)) return 'n/a';
  return fmtFixed(n, n >= 100 ? 0 : 1);
}

/** 15286704 → "14.6 MiB"; powers of 1024, as `ls -h` and `du -h` print them. */
export function fmtBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${fmtFixed(n, 1)} ${units[i]}`;
}

/** Milliseconds → "85 ms", "2.41 s", "3 min 05 s". */
export function fmtDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${fmtFixed(ms / 1000, 2)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
}

/** 17_900_000 → "17.9 M": compact counts for headlines (tables keep full numbers). */
export function fmtCompact(n: number): string {
  const steps: [number, string][] = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [v, s] of steps) if (Math.abs(n) >= v) return `${fmtFixed(n / v, n / v >= 100 ? 0 : n / v >= 10 ? 1 : 2)} ${s}`;
  return String(n);
}

export interface Column {
  header: string;
  /** Numbers are right-aligned so their digits line up; text is left-aligned. */
  align?: 'left' | 'right';
}

/** A table row, or 'rule' for a dashed separator line (e.g. before a totals row). */
export type Row = string[] | 'rule';

/**
 * Render rows under headers with every column padded to its widest cell, two spaces between columns.
 * @example
 *   table([{ header: 'brick' }, { header: 'params', align: 'right' }], [['embed', '1,048,576']]);
 */
export function table(columns: Column[], rows: Row[], indent = ''): string {
  const widths = columns.map((c, i) => Math.max(c.header.length, ...rows.map((r) => (r === 'rule' ? 0 : (r[i] ?? '').length))));
  const line = (cells: string[]) =>
    indent + cells.map((cell, i) => (columns[i].align === 'right' ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join('  ').trimEnd();
  const rule = indent + widths.map((w) => '-'.repeat(w)).join('  ');
  const out = [line(columns.map((c) => c.header)), rule];
  for (const r of rows) out.push(r === 'rule' ? rule : line(r));
  return out.join('\n');
}

/** Aligned "key  value" lines. */
export function keyValues(pairs: [string, string][], indent = ''): string {
  const w = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${indent}${k.padEnd(w)}  ${v}`).join('\n');
}

/**
 * "25.0% of FFN FLOPs, 0.0% of attention FLOPs (17.4% of all sublayer FLOPs)", plus any overhead. A
 * negative share (moe-topk above the model's own top-k runs more experts) reads "-99.7% (added)".
 */
export function skippedText(s: { ffn: number; attn: number; all: number; overhead: number }): string {
  const p = (x: number) => `${fmtFixed(100 * x, 1)}%${x < 0 ? ' (added)' : ''}`;
  const over = s.overhead > 0 ? `; exit checks added ${fmtFixed(100 * s.overhead, 1)}%` : '';
  return `${p(s.ffn)} of FFN FLOPs, ${p(s.attn)} of attention FLOPs (${p(s.all)} of all sublayer FLOPs${over})`;
}

/**
 * The costliest kinds of GPU dispatch of a profile (WebGpuBackend.stopProfile), as a table. GB/s is the
 * bytes each dispatch binds ÷ its time: for GEMVs and elementwise kernels, their bandwidth.
 */
export function profileTable(entries: readonly { label: string; count: number; ms: number; bytes: number }[], top: number): string {
  const total = entries.reduce((s, e) => s + e.ms, 0);
  const gbs = (e: { count: number; ms: number; bytes: number }) => {
    const v = e.ms > 0 ? (e.count * e.bytes) / (e.ms * 1e6) : 0;
    return v === 0 ? '' : fmtFixed(v, v >= 100 ? 0 : v >= 1 ? 1 : 3);
  };
  const rows: Row[] = entries.slice(0, top).map((e) => [e.label, fmtInt(e.count), fmtFixed(e.ms, 3), `${fmtFixed((100 * e.ms) / total, 1)}%`, fmtFixed((1000 * e.ms) / e.count, 1), gbs(e)]);
  const rest = entries.slice(top);
  if (rest.length) rows.push([`(${rest.length} more kinds)`, fmtInt(rest.reduce((s, e) => s + e.count, 0)), fmtFixed(rest.reduce((s, e) => s + e.ms, 0), 3), `${fmtFixed((100 * rest.reduce((s, e) => s + e.ms, 0)) / total, 1)}%`, '', '']);
  rows.push('rule', ['total', fmtInt(entries.reduce((s, e) => s + e.count, 0)), fmtFixed(total, 3), '100.0%', '', '']);
  return table([{ header: 'kernel (op, variant, input shapes)' }, { header: 'dispatches', align: 'right' }, { header: 'GPU ms', align: 'right' }, { header: 'share', align: 'right' }, { header: 'µs each', align: 'right' }, { header: 'GB/s', align: 'right' }], rows);
}
