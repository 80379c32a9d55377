/**
 * report.html: one self-contained page (inline SVG, no scripts or external files) with the run's loss,
 * chosen/rejected log-probs, win rates per iteration and throughput, drawn from the telemetry history.
 */
import type { TelemetryEvent } from "../gen/sppo/v1/telemetry_pb.js";
import { type ChartSeries, lineChartSvg } from "../lib/chart/line-chart.js";
import type { IterationResult } from "./loop.js";

const escapeHtml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

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
  // Step charts: x is the run's step count; a dashed line marks where each iteration starts.
  const markers = steps.flatMap((s, i) => (i === 0 || steps[i - 1].iteration !== s.iteration ? [{ x: i + 0.5, label: `it ${s.iteration}` }] : []));
  const line = (label: string, color: string, pick: (s: (typeof steps)[number]) => number | undefined, dashed = false): ChartSeries => ({
    label,
    color,
    dashed,
    points: steps.map((s, i) => ({ x: i + 1, y: pick(s) ?? Number.NaN })),
  });
  const stepChart = (title: string, yLabel: string, series: ChartSeries[]) => lineChartSvg(series, { title, xLabel: "optimizer step", yLabel, integerX: true, markers });
  const rates: ChartSeries[] = [
    { label: "vs base", color: "#1f77b4", points: [{ x: 0, y: 0.5 }, ...input.iterations.map((r) => ({ x: r.iteration, y: r.win_rate_vs_base }))] },
    { label: "vs previous", color: "#ff7f0e", points: input.iterations.map((r) => ({ x: r.iteration, y: r.win_rate_vs_previous })) },
  ];
  const palette = ["#2ca02c", "#d62728", "#9467bd", "#8c564b"];
  const others = Object.entries(input.comparison ?? {});
  others.forEach(([name, its], i) => {
    rates.push({ label: `${name} vs base`, color: palette[i % palette.length], points: [{ x: 0, y: 0.5 }, ...its.map((r) => ({ x: r.iteration, y: r.win_rate_vs_base }))] });
  });
  const runs = [[input.algorithm, input.iterations] as const, ...others];
  const probes = runs.some(([, its]) => its.some((r) => r.probe_exploitability !== undefined));
  const probeSeries: ChartSeries[] = runs.flatMap(([name, its], i) =>
    its.some((r) => r.probe_exploitability !== undefined)
      ? [{ label: `${name}`, color: i === 0 ? "#1f77b4" : palette[(i - 1) % palette.length], points: its.map((r) => ({ x: r.iteration, y: r.probe_exploitability ?? Number.NaN })) }]
      : [],
  );
  // A column only where some row has a value (probe exploitability exists only with pipeline.probes).
  const rows = runs
    .flatMap(([name, its]) => its.map((r) => ({ name, r })))
    .map(
      ({ name, r }) =>
        `<tr><td>${escapeHtml(name)}</td><td>${r.iteration}</td><td>${r.prompts}</td><td>${r.win_rate_vs_base.toFixed(3)}</td><td>${r.win_rate_vs_previous.toFixed(3)}</td>${probes ? `<td>${r.probe_exploitability?.toFixed(3) ?? ""}</td>` : ""}<td>v${r.policyVersion}</td><td>${r.seconds.toFixed(1)}</td></tr>`,
    )
    .join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(input.title)}</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:1600px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}.grid{display:flex;flex-wrap:wrap;gap:1rem;margin-top:1rem}</style></head><body>
<h1>${escapeHtml(input.title)}</h1>
<p>Algorithm: <b>${escapeHtml(input.algorithm)}</b>. Win rates are the oracle's judgement of the new policy against the base and the previous policy on held-out prompts (the analogue of the paper's Table 1).</p>
<table><tr><th>algorithm</th><th>iteration</th><th>prompts</th><th>win rate vs base</th><th>vs previous</th>${probes ? "<th>probe exploitability</th>" : ""}<th>policy</th><th>seconds</th></tr>${rows}</table>
<div class="grid">
${lineChartSvg(rates, { title: "Win rate per iteration", xLabel: "iteration", yLabel: "win rate", integerX: true, yDomain: [0, 1] })}
${probes ? lineChartSvg(probeSeries, { title: "Probe exploitability", xLabel: "iteration", yLabel: "max over probes of P(probe ≻ policy) − ½", integerX: true }) : ""}
${stepChart("Training loss", "loss", [line("loss", "#d62728", (s) => s.loss)])}
${stepChart("Summed log-prob of chosen and rejected responses", "log π(y|x), nats", [line("chosen", "#2ca02c", (s) => s.chosenLogprob), line("rejected", "#9467bd", (s) => s.rejectedLogprob)])}
${stepChart("Δ = log πθ − log π_ref against its target", "nats", [
  line("chosen Δ", "#2ca02c", (s) => s.chosenDelta),
  line("chosen target η(P̂−½)", "#2ca02c", (s) => s.chosenTarget, true),
  line("rejected Δ", "#9467bd", (s) => s.rejectedDelta),
  line("rejected target η(P̂−½)", "#9467bd", (s) => s.rejectedTarget, true),
  ...(steps.some((s) => s.chosenTarget !== undefined) ? [] : [line("mean target η(P̂−½)", "#7f7f7f", (s) => s.target, true)]),
])}
${stepChart("Training throughput", "tokens/s", [line("tokens/s", "#8c564b", (s) => s.tokensPerSecond)])}
</div></body></html>
`;
}
