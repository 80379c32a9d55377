/**
 * The project's one chart writer: line charts as self-contained SVG documents (no scripts, fonts or external
 * references), on linear or log axes, for report.html and `sppo nash --plot`. Axes always cover the data (the
 * domain is widened to round ticks), both axes carry titles, the legend sits beside the plot (never on the lines),
 * vertical markers label events along x (e.g. where each iteration starts), and numbers read as numbers (6 000, not
 * 6.0e+3). The live dashboard draws in the browser instead (uPlot, pipeline/dashboard/).
 *
 * (String building rather than a charting package: packages that draw SVG on the server need a DOM or a canvas,
 * and these charts are a few hundred lines.)
 */

export interface ChartSeries {
  label: string;
  /** (x, y) points; non-finite ones are skipped, and on a log axis so are those ≤ 0. */
  points: readonly { x: number; y: number }[];
  /** CSS colour. */
  color: string;
  /** Dashed line (reference curves such as a bound or a target). @default false */
  dashed?: boolean;
  /** Dots on the points. @default when the series has fewer than 30 points */
  dots?: boolean;
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  /** @default "linear" */
  xScale?: "linear" | "log";
  /** @default "linear" */
  yScale?: "linear" | "log";
  /** x ticks at whole numbers only (iterations, steps). @default false */
  integerX?: boolean;
  /** Fixed y domain on a linear axis (e.g. [0, 1] for win rates), widened if the data leave it. */
  yDomain?: [number, number];
  /** Dashed vertical lines with a label at the top, e.g. { x: 12.5, label: "it 2" }. */
  markers?: readonly { x: number; label: string }[];
  /** Pixels. @default 760 */
  width?: number;
  /** Pixels. @default 340 */
  height?: number;
}

const escapeXml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const px = (v: number) => Number(v.toFixed(1)).toString();

/** A tick label: plain digits with thin-space thousands up to a million, k/M beyond; exponents only for tiny values. */
export function formatTick(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6) return `${Number((v / 1e6).toPrecision(3))}M`;
  if (a >= 1e3) return Number(v.toPrecision(6)).toLocaleString("en-US").replace(/,/g, " ");
  if (a < 1e-3) return v.toExponential(0).replace("e-", "e−");
  return String(Number(v.toPrecision(4)));
}

/** Whether [lo, hi] is a point to float resolution (e.g. win rates 0.5 and 0.49999999999999994). */
function flat(lo: number, hi: number): boolean {
  return !(hi - lo > 1e-12 * Math.max(1, Math.abs(lo), Math.abs(hi)));
}

/**
 * Round tick values whose span covers [lo, hi]: the first tick ≤ lo, the last ≥ hi. Indexed, so that a span near
 * float resolution cannot loop forever. `minStep` keeps ticks apart (1 for whole numbers).
 */
export function niceTicks(lo: number, hi: number, count = 5, minStep = 0): number[] {
  if (flat(lo, hi)) return [lo];
  const raw = Math.max((hi - lo) / count, minStep);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = magnitude * ([1, 2, 5, 10].find((m) => m * magnitude >= raw * (1 - 1e-9)) ?? 10);
  const first = Math.floor(lo / step + 1e-9) * step;
  const ticks: number[] = [];
  for (let i = 0; i <= 4 * count + 2; i++) {
    const v = Number((first + i * step).toPrecision(12));
    ticks.push(v);
    if (v >= hi - step * 1e-9) break;
  }
  return ticks;
}

/** Powers of ten covering [lo, hi] (lo, hi > 0). */
function logTicks(lo: number, hi: number): number[] {
  const k0 = Math.floor(Math.log10(lo) + 1e-12);
  const k1 = Math.max(k0 + 1, Math.ceil(Math.log10(hi) - 1e-12));
  return Array.from({ length: k1 - k0 + 1 }, (_, i) => 10 ** (k0 + i));
}

/** 10^k as a short label: 1, 10, 100, 1000, 1e4 ..., 0.1, 0.01, 1e−3 ... */
function powerLabel(v: number): string {
  const k = Math.round(Math.log10(v));
  if (k >= 0 && k <= 3) return String(10 ** k);
  if (k < 0 && k >= -2) return (10 ** k).toFixed(-k);
  return `1e${k < 0 ? `−${-k}` : k}`;
}

interface Axis {
  ticks: number[];
  label: (v: number) => string;
  /** Position in [0, 1] along the axis. */
  at: (v: number) => number;
  drawable: (v: number) => boolean;
}

function axisOf(values: number[], scale: "linear" | "log", integer: boolean, domain?: [number, number]): Axis {
  if (scale === "log") {
    const ticks = logTicks(Math.min(...values), Math.max(...values));
    const [l0, l1] = [Math.log10(ticks[0]), Math.log10(ticks[ticks.length - 1])];
    return { ticks, label: powerLabel, at: (v) => (Math.log10(v) - l0) / (l1 - l0), drawable: (v) => v > 0 && Number.isFinite(v) };
  }
  let lo = Math.min(...values, ...(domain ? [domain[0]] : []));
  let hi = Math.max(...values, ...(domain ? [domain[1]] : []));
  if (flat(lo, hi)) [lo, hi] = integer ? [lo - 1, hi + 1] : [lo - Math.max(Math.abs(lo) * 0.1, 0.5), hi + Math.max(Math.abs(hi) * 0.1, 0.5)];
  const ticks = niceTicks(lo, hi, 5, integer ? 1 : 0);
  const [t0, t1] = [ticks[0], ticks[ticks.length - 1]];
  return { ticks, label: formatTick, at: (v) => (v - t0) / (t1 - t0), drawable: Number.isFinite };
}

/** Renders the series as one SVG document string; a chart with nothing to draw says so inside its frame. */
export function lineChartSvg(series: readonly ChartSeries[], options: ChartOptions): string {
  const width = options.width ?? 760;
  const height = options.height ?? 340;
  const legendWidth = Math.min(260, 40 + 7 * Math.max(0, ...series.map((s) => s.label.length)));
  const margin = { left: 76, right: legendWidth + 16, top: 36, bottom: 52 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const xScale = options.xScale ?? "linear";
  const yScale = options.yScale ?? "linear";
  const usable = (v: number, scale: "linear" | "log") => Number.isFinite(v) && (scale === "linear" || v > 0);
  const drawable = series.map((s) => s.points.filter((p) => usable(p.x, xScale) && usable(p.y, yScale)));
  const all = drawable.flat();

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12" role="img" aria-label="${escapeXml(options.title)}">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${px(margin.left + plotW / 2)}" y="22" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(options.title)}</text>`);
  if (all.length === 0) {
    out.push(`<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#ccc"/>`);
    out.push(`<text x="${px(margin.left + plotW / 2)}" y="${px(margin.top + plotH / 2)}" text-anchor="middle" fill="#888">no data</text>`);
    out.push("</svg>");
    return `${out.join("\n")}\n`;
  }
  const markers = (options.markers ?? []).filter((m) => usable(m.x, xScale));
  const x = axisOf([...all.map((p) => p.x), ...markers.map((m) => m.x)], xScale, options.integerX === true);
  const y = axisOf(
    all.map((p) => p.y),
    yScale,
    false,
    options.yDomain,
  );
  const sx = (v: number) => margin.left + x.at(v) * plotW;
  const sy = (v: number) => margin.top + (1 - y.at(v)) * plotH;

  for (const t of x.ticks) {
    out.push(`<line x1="${px(sx(t))}" y1="${margin.top}" x2="${px(sx(t))}" y2="${margin.top + plotH}" stroke="#eee"/>`);
    out.push(`<text x="${px(sx(t))}" y="${margin.top + plotH + 16}" text-anchor="middle">${x.label(t)}</text>`);
  }
  for (const t of y.ticks) {
    out.push(`<line x1="${margin.left}" y1="${px(sy(t))}" x2="${margin.left + plotW}" y2="${px(sy(t))}" stroke="#eee"/>`);
    out.push(`<text x="${margin.left - 6}" y="${px(sy(t))}" text-anchor="end" dominant-baseline="middle">${y.label(t)}</text>`);
  }
  for (const m of markers) {
    out.push(`<line x1="${px(sx(m.x))}" y1="${margin.top}" x2="${px(sx(m.x))}" y2="${margin.top + plotH}" stroke="#999" stroke-dasharray="4 4"/>`);
    out.push(`<text x="${px(sx(m.x) + 3)}" y="${margin.top + 11}" font-size="10" fill="#666">${escapeXml(m.label)}</text>`);
  }
  out.push(`<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${px(margin.left + plotW / 2)}" y="${height - 10}" text-anchor="middle">${escapeXml(options.xLabel)}</text>`);
  const yMid = px(margin.top + plotH / 2);
  out.push(`<text x="16" y="${yMid}" text-anchor="middle" transform="rotate(-90 16 ${yMid})">${escapeXml(options.yLabel)}</text>`);

  series.forEach((s, i) => {
    const pts = drawable[i];
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : "";
    if (pts.length > 1) {
      const d = pts.map((p, j) => `${j === 0 ? "M" : "L"}${px(sx(p.x))},${px(sy(p.y))}`).join(" ");
      out.push(`<path d="${d}" fill="none" stroke="${escapeXml(s.color)}" stroke-width="1.8"${dash}/>`);
    }
    if (s.dots ?? pts.length < 30) for (const p of pts) out.push(`<circle cx="${px(sx(p.x))}" cy="${px(sy(p.y))}" r="3" fill="${escapeXml(s.color)}"/>`);
    // The legend: a column beside the plot, one entry per series.
    const ly = margin.top + 10 + i * 20;
    const lx = margin.left + plotW + 14;
    out.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 22}" y2="${ly}" stroke="${escapeXml(s.color)}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${lx + 28}" y="${ly}" dominant-baseline="middle">${escapeXml(s.label)}</text>`);
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}
