/**
 * A small, dependency-free SVG line chart on log-log axes, for `sppo nash`'s exploitability-vs-T plot. The output is
 * one self-contained SVG document (no scripts, fonts or external references), viewable in any browser.
 * (A charting package would pull in a DOM or a canvas; the chart needs ~150 lines of string building.)
 */

export interface PlotSeries {
  label: string;
  /** (x, y) points; x > 0 and y > 0 are drawn (log axes), others are skipped. */
  points: readonly { x: number; y: number }[];
  /** CSS colour. */
  color: string;
  /** Draw dashed (reference curves such as a bound). @default false */
  dashed?: boolean;
}

export interface PlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Pixels. @default 800 */
  width?: number;
  /** Pixels. @default 440 */
  height?: number;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function fmt(v: number): string {
  return Number(v.toFixed(2)).toString();
}

/** 10^k as a short label: 1, 10, 100, 1000, 1e4 ..., 0.1, 0.01, 1e-3 ... */
function powerLabel(k: number): string {
  if (k >= 0 && k <= 3) return String(10 ** k);
  if (k < 0 && k >= -2) return (10 ** k).toFixed(-k);
  return `1e${k}`;
}

/** Renders the series as an SVG document string. Throws when no series has a drawable point. */
export function lineChartSvg(series: readonly PlotSeries[], options: PlotOptions): string {
  const width = options.width ?? 800;
  const height = options.height ?? 440;
  const margin = { left: 70, right: 230, top: 40, bottom: 55 };
  const drawable = series.map((s) => s.points.filter((p) => p.x > 0 && p.y > 0 && Number.isFinite(p.x) && Number.isFinite(p.y)));
  const all = drawable.flat();
  if (all.length === 0) throw new RangeError("lineChartSvg: no positive points to draw");
  const lx = all.map((p) => Math.log10(p.x));
  const ly = all.map((p) => Math.log10(p.y));
  const x0 = Math.floor(Math.min(...lx));
  const x1 = Math.max(x0 + 1, Math.ceil(Math.max(...lx)));
  const y0 = Math.floor(Math.min(...ly));
  const y1 = Math.max(y0 + 1, Math.ceil(Math.max(...ly)));
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const sx = (x: number) => margin.left + ((Math.log10(x) - x0) / (x1 - x0)) * plotW;
  const sy = (y: number) => margin.top + (1 - (Math.log10(y) - y0) / (y1 - y0)) * plotH;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${fmt(width / 2)}" y="22" text-anchor="middle" font-size="14">${escapeXml(options.title)}</text>`);
  // Grid and tick labels at powers of ten.
  for (let k = x0; k <= x1; k++) {
    const x = fmt(sx(10 ** k));
    out.push(`<line x1="${x}" y1="${margin.top}" x2="${x}" y2="${margin.top + plotH}" stroke="#ddd"/>`);
    out.push(`<text x="${x}" y="${margin.top + plotH + 18}" text-anchor="middle">${powerLabel(k)}</text>`);
  }
  for (let k = y0; k <= y1; k++) {
    const y = fmt(sy(10 ** k));
    out.push(`<line x1="${margin.left}" y1="${y}" x2="${margin.left + plotW}" y2="${y}" stroke="#ddd"/>`);
    out.push(`<text x="${margin.left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${powerLabel(k)}</text>`);
  }
  out.push(`<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${fmt(margin.left + plotW / 2)}" y="${height - 12}" text-anchor="middle">${escapeXml(options.xLabel)}</text>`);
  out.push(
    `<text x="18" y="${fmt(margin.top + plotH / 2)}" text-anchor="middle" transform="rotate(-90 18 ${fmt(margin.top + plotH / 2)})">${escapeXml(options.yLabel)}</text>`,
  );
  series.forEach((s, i) => {
    const pts = drawable[i];
    if (pts.length > 0) {
      const d = pts.map((p, j) => `${j === 0 ? "M" : "L"}${fmt(sx(p.x))},${fmt(sy(p.y))}`).join(" ");
      out.push(`<path d="${d}" fill="none" stroke="${escapeXml(s.color)}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`);
    }
    const ly2 = margin.top + 10 + i * 20;
    const lx2 = margin.left + plotW + 12;
    out.push(`<line x1="${lx2}" y1="${ly2}" x2="${lx2 + 24}" y2="${ly2}" stroke="${escapeXml(s.color)}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`);
    out.push(`<text x="${lx2 + 30}" y="${ly2}" dominant-baseline="middle">${escapeXml(s.label)}</text>`);
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}
