// Small, dependency-free SVG line charts for reports: one or more panels side by side, each with
// axes, ticks, a legend and one polyline (with point markers) per series. Output is a complete SVG
// document; text is escaped, so series names can be anything.

export interface Series {
  name: string;
  points: [number, number][];
}

export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf'];
const W = 520, H = 320, M = { l: 64, r: 124, t: 36, b: 48 };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** About five round tick values covering [lo, hi]. */
function ticks(lo: number, hi: number): number[] {
  if (!(hi > lo)) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  const raw = (hi - lo) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  const first = Math.floor(lo / step + 1e-9), last = Math.ceil(hi / step - 1e-9);
  for (let i = first; i <= last; i++) out.push(+(i * step).toPrecision(12));
  return out;
}

const label = (v: number) => (Math.abs(v) >= 1000 ? v.toFixed(0) : +v.toPrecision(4) + '');

function panel(p: Panel, x0: number): string {
  const pts = p.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xt = ticks(Math.min(...pts.map((q) => q[0]), 0), Math.max(...pts.map((q) => q[0]), 0));
  const yt = ticks(Math.min(...pts.map((q) => q[1])), Math.max(...pts.map((q) => q[1])));
  const [xa, xb, ya, yb] = [xt[0], xt[xt.length - 1], yt[0], yt[yt.length - 1]];
  const sx = (x: number) => x0 + M.l + ((x - xa) / (xb - xa || 1)) * (W - M.l - M.r);
  const sy = (y: number) => M.t + (1 - (y - ya) / (yb - ya || 1)) * (H - M.t - M.b);
  const o: string[] = [];
  o.push(`<text x="${x0 + W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(p.title)}</text>`);
  for (const v of xt) o.push(`<line x1="${sx(v)}" x2="${sx(v)}" y1="${M.t}" y2="${H - M.b}" stroke="#eee"/><text x="${sx(v)}" y="${H - M.b + 16}" text-anchor="middle" font-size="11">${label(v)}</text>`);
  for (const v of yt) o.push(`<line x1="${x0 + M.l}" x2="${x0 + W - M.r}" y1="${sy(v)}" y2="${sy(v)}" stroke="#eee"/><text x="${x0 + M.l - 6}" y="${sy(v) + 4}" text-anchor="end" font-size="11">${label(v)}</text>`);
  o.push(`<rect x="${x0 + M.l}" y="${M.t}" width="${W - M.l - M.r}" height="${H - M.t - M.b}" fill="none" stroke="#444"/>`);
  o.push(`<text x="${x0 + M.l + (W - M.l - M.r) / 2}" y="${H - 10}" text-anchor="middle" font-size="12">${esc(p.xLabel)}</text>`);
  o.push(`<text transform="translate(${x0 + 16},${M.t + (H - M.t - M.b) / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(p.yLabel)}</text>`);
  p.series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const sorted = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).sort((a, b) => a[0] - b[0]);
    o.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${sorted.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ')}"/>`);
    for (const [x, y] of sorted) o.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${c}"/>`);
    // The legend sits right of the plot area, so it never hides a point.
    const lx = x0 + W - M.r + 10;
    o.push(`<rect x="${lx}" y="${M.t + 8 + i * 16}" width="10" height="10" fill="${c}"/><text x="${lx + 14}" y="${M.t + 17 + i * 16}" font-size="11">${esc(s.name)}</text>`);
  });
  return o.join('\n');
}

/**
 * An SVG document with the panels side by side.
 * @example
 *   writeFileSync('plot.svg', svgChart([{ title: 'ppl', xLabel: 'x', yLabel: 'y', series: [{ name: 'a', points: [[0, 1], [1, 2]] }] }]));
 */
export function svgChart(panels: Panel[], caption?: string): string {
  const height = H + (caption ? 24 : 0);
  const body = panels.map((p, i) => panel(p, i * W)).join('\n');
  const cap = caption ? `<text x="8" y="${H + 16}" font-size="11" fill="#555">${esc(caption)}</text>` : '';
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W * panels.length}" height="${height}" viewBox="0 0 ${W * panels.length} ${height}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${body}\n${cap}\n</svg>\n`;
}
