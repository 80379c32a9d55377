/**
 * report.html: one self-contained page (inline SVG, no scripts or external files) with the run's loss,
 * chosen/rejected log-probs, win rates per iteration and throughput, drawn from the telemetry history.
 */
import type { TelemetryEvent } from "../gen/sppo/v1/telemetry_pb.js";
import type { IterationResult } from "./loop.js";

interface Series {
  label: string;
  color: string;
  points: { x: number; y: number }[];
}

const escapeHtml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** Round tick values over [lo, hi]; indexed, so that a span near float resolution cannot loop forever. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi - lo > 1e-12 * Math.max(1, Math.abs(lo), Math.abs(hi)))) return [lo];
  const raw = (hi - lo) / count;
  const step = 10 ** Math.floor(Math.log10(raw)) * ([1, 2, 5, 10].find((m) => m * 10 ** Math.floor(Math.log10(raw)) >= raw) ?? 10);
  const first = Math.ceil(lo / step) * step;
  const ticks: number[] = [];
  for (let i = 0; i <= 2 * count + 1; i++) {
    const v = first + i * step;
    if (v > hi + step * 1e-9) break;
    ticks.push(Number(v.toPrecision(12)));
  }
  return ticks;
}

/** A linear-axes line chart as an SVG element. */
export function linearChart(title: string, xLabel: string, series: Series[], width = 640, height = 300): string {
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  if (all.length === 0) return `<p class="empty">${escapeHtml(title)}: no data</p>`;
  const m = { left: 64, right: 16, top: 28, bottom: 44 };
  let [x0, x1] = [Math.min(...all.map((p) => p.x)), Math.max(...all.map((p) => p.x))];
  let [y0, y1] = [Math.min(...all.map((p) => p.y)), Math.max(...all.map((p) => p.y))];
  // A flat series (or one flat to float resolution, e.g. win rates of 0.5 and 0.49999999999999994) gets a unit span.
  const flat = (a: number, b: number) => !(b - a > 1e-12 * Math.max(1, Math.abs(a), Math.abs(b)));
  if (flat(x0, x1)) [x0, x1] = [x0 - 1, x1 + 1];
  if (flat(y0, y1)) [y0, y1] = [y0 - 1, y1 + 1];
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * (width - m.left - m.right);
  const sy = (y: number) => height - m.bottom - ((y - y0) / (y1 - y0)) * (height - m.top - m.bottom);
  const fmt = (v: number) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : String(Number(v.toPrecision(3))));
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="${escapeHtml(title)}">`];
  parts.push(`<text x="${width / 2}" y="18" text-anchor="middle" font-weight="bold">${escapeHtml(title)}</text>`);
  for (const t of niceTicks(y0, y1)) {
    parts.push(`<line x1="${m.left}" x2="${width - m.right}" y1="${sy(t)}" y2="${sy(t)}" stroke="#ddd"/><text x="${m.left - 6}" y="${sy(t) + 4}" text-anchor="end" font-size="11">${fmt(t)}</text>`);
  }
  for (const t of niceTicks(x0, x1)) {
    parts.push(`<text x="${sx(t)}" y="${height - m.bottom + 16}" text-anchor="middle" font-size="11">${fmt(t)}</text>`);
  }
  parts.push(`<text x="${width / 2}" y="${height - 8}" text-anchor="middle" font-size="12">${escapeHtml(xLabel)}</text>`);
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
    if (pts.length === 0) return;
    parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.8" points="${pts.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ")}"/>`);
    if (pts.length < 20) for (const p of pts) parts.push(`<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="3" fill="${s.color}"/>`);
    parts.push(`<text x="${m.left + 8 + i * 170}" y="${m.top + 12}" font-size="12" fill="${s.color}">■ ${escapeHtml(s.label)}</text>`);
  });
  parts.push("</svg>");
  return parts.join("");
}

export interface ReportInput {
  title: string;
  algorithm: string;
  iterations: IterationResult[];
  events: readonly TelemetryEvent[];
  /** Other losses run from the same base (pipeline.compareAlgorithms). */
  comparison?: Record<string, IterationResult[]>;
}

/** The whole page. */
export function renderReport(input: ReportInput): string {
  const steps = input.events.flatMap((e) => (e.payload.case === "trainStep" ? [{ iteration: e.iteration, ...e.payload.value }] : []));
  const x = (i: number) => i + 1;
  const line = (label: string, color: string, pick: (s: (typeof steps)[number]) => number): Series => ({ label, color, points: steps.map((s, i) => ({ x: x(i), y: pick(s) })) });
  const rates: Series[] = [
    { label: "win rate vs base", color: "#1f77b4", points: [{ x: 0, y: 0.5 }, ...input.iterations.map((r) => ({ x: r.iteration, y: r.win_rate_vs_base }))] },
    { label: "win rate vs previous", color: "#ff7f0e", points: input.iterations.map((r) => ({ x: r.iteration, y: r.win_rate_vs_previous })) },
  ];
  const palette = ["#2ca02c", "#d62728", "#9467bd", "#8c564b"];
  const others = Object.entries(input.comparison ?? {});
  others.forEach(([name, its], i) => {
    rates.push({ label: `${name} vs base`, color: palette[i % palette.length], points: [{ x: 0, y: 0.5 }, ...its.map((r) => ({ x: r.iteration, y: r.win_rate_vs_base }))] });
  });
  const probeSeries: Series[] = [[input.algorithm, input.iterations] as const, ...others].flatMap(([name, its], i) =>
    its.some((r) => r.probe_exploitability !== undefined)
      ? [{ label: `${name}`, color: i === 0 ? "#1f77b4" : palette[(i - 1) % palette.length], points: its.map((r) => ({ x: r.iteration, y: r.probe_exploitability ?? Number.NaN })) }]
      : [],
  );
  const rows = [[input.algorithm, input.iterations] as const, ...others]
    .flatMap(([name, its]) => its.map((r) => ({ name, r })))
    .map(({ name, r }) => `<tr><td>${escapeHtml(name)}</td><td>${r.iteration}</td><td>${r.prompts}</td><td>${r.win_rate_vs_base.toFixed(3)}</td><td>${r.win_rate_vs_previous.toFixed(3)}</td><td>${r.probe_exploitability?.toFixed(3) ?? "—"}</td><td>v${r.policyVersion}</td><td>${r.seconds.toFixed(1)}</td></tr>`)
    .join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(input.title)}</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:1400px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
.grid{display:flex;flex-wrap:wrap;gap:1rem}.empty{color:#888}</style></head><body>
<h1>${escapeHtml(input.title)}</h1>
<p>Algorithm: <b>${escapeHtml(input.algorithm)}</b>. Win rates are the oracle's judgement of the new policy against the base and the previous policy on held-out prompts (the analogue of the paper's Table 1).</p>
<table><tr><th>loss</th><th>iteration</th><th>prompts</th><th>win rate vs base</th><th>vs previous</th><th>probe exploitability</th><th>policy</th><th>seconds</th></tr>${rows}</table>
<div class="grid">
${linearChart("Win rate per iteration", "iteration", rates)}
${probeSeries.length > 0 ? linearChart("Probe exploitability (max over probes of P(probe ≻ policy) − ½)", "iteration", probeSeries) : ""}
${linearChart("Training loss", "optimizer step", [line("loss", "#d62728", (s) => s.loss)])}
${linearChart("Summed log-prob of chosen and rejected responses", "optimizer step", [line("chosen", "#2ca02c", (s) => s.chosenLogprob), line("rejected", "#9467bd", (s) => s.rejectedLogprob)])}
${linearChart("Δ = log πθ − log π_ref", "optimizer step", [line("chosen Δ", "#2ca02c", (s) => s.chosenDelta), line("rejected Δ", "#9467bd", (s) => s.rejectedDelta), line("target η(P̂−½)", "#7f7f7f", (s) => s.target)])}
${linearChart("Training throughput", "optimizer step", [line("tokens/s", "#8c564b", (s) => s.tokensPerSecond)])}
</div></body></html>
`;
}
