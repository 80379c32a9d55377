/**
 * comparison.html: one self-contained page (inline SVG, no scripts) for `sppo compare-runs` — per algorithm and
 * iteration the median over seeds with its range, the last iteration seed by seed, the medians as charts, and the
 * head-to-head matrix of the final policies.
 */
import type { Comparison } from "./compare-runs.js";
import { lineChartSvg } from "../lib/chart/line-chart.js";
import type { SeedSummary } from "./seed-summary.js";

const escapeHtml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/** "0.512 [0.48, 0.55]": the median and the range over seeds. */
const cell = (s: SeedSummary | undefined) => (s ? `${s.median.toFixed(3)} <small>[${s.min.toFixed(3)}, ${s.max.toFixed(3)}]</small>` : "—");

/** The whole page. */
export function renderComparison(c: Comparison): string {
  const names = Object.keys(c.algorithms);
  const color = (name: string) => PALETTE[names.indexOf(name) % PALETTE.length];
  const hasProbes = names.every((n) => c.algorithms[n].iterations.every((it) => it.probe_exploitability !== undefined));
  const rows = names
    .flatMap((name) =>
      c.algorithms[name].iterations.map(
        (it) =>
          `<tr><td>${escapeHtml(name)}</td><td>${it.iteration}</td><td>${cell(it.win_rate_vs_base)}</td><td>${cell(it.win_rate_vs_previous)}</td>${hasProbes ? `<td>${cell(it.probe_exploitability)}</td><td>${cell(it.average_policy_probe_exploitability)}</td>` : ""}<td>${it.seconds.median.toFixed(1)}</td></tr>`,
      ),
    )
    .join("");
  const medians = (pick: (it: Comparison["algorithms"][string]["iterations"][number]) => SeedSummary | undefined, start?: number) =>
    names.map((name) => ({
      label: `${name} (median)`,
      color: color(name),
      points: [...(start !== undefined ? [{ x: 0, y: start }] : []), ...c.algorithms[name].iterations.map((it) => ({ x: it.iteration, y: pick(it)?.median ?? Number.NaN }))],
    }));
  // The last iteration seed by seed: within a seed the algorithms share prompts and sampling seeds, so read across.
  const last = (name: string) => c.algorithms[name].iterations.at(-1)!;
  const perSeedHead = names.map((n) => `<th>${escapeHtml(n)}: vs base</th>${hasProbes ? `<th>${escapeHtml(n)}: probe expl.</th>` : ""}`).join("");
  const perSeedRows = c.seeds
    .map(
      (seed, i) =>
        `<tr><td>${seed}</td>${names.map((n) => `<td>${last(n).win_rate_vs_base.values[i].toFixed(3)}</td>${hasProbes ? `<td>${last(n).probe_exploitability?.values[i].toFixed(3)}</td>` : ""}`).join("")}</tr>`,
    )
    .join("");
  const h = c.head_to_head;
  const matrix = `<table><tr><th>row ≻ column</th>${h.order.map((n) => `<th>${escapeHtml(n)}</th>`).join("")}</tr>${h.matrix
    .map((row, i) => `<tr><th>${escapeHtml(h.order[i])}</th>${row.map((p) => `<td>${p.toFixed(3)}</td>`).join("")}</tr>`)
    .join("")}</table>`;
  const title = `SPPO compare-runs — ${names.join(", ")} over ${c.seeds.length} seed${c.seeds.length === 1 ? "" : "s"}, ${c.iterations} iteration${c.iterations === 1 ? "" : "s"}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:1400px}table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
small{color:#666}.grid{display:flex;flex-wrap:wrap;gap:1rem}.empty{color:#888}</style></head><body>
<h1>${escapeHtml(title)}</h1>
<p>Config <code>${escapeHtml(c.config || "(given in-process)")}</code>. Seeds (pipeline.seed) ${c.seeds.join(", ")}; optimizer seeds ${c.optimizer_seeds.join(", ")}.
A seed decides the held-out prompts, each iteration's prompt split and every sampling request; within a seed the algorithms share them and differ only by their loss.
Cells: median over seeds <small>[min, max]</small>${hasProbes ? "; the average policy π̄_t mixes the base and the policies of iterations 1..t evenly (Theorem 4.1 bounds its exploitability, not the last policy's)" : ""}. ${c.seconds.toFixed(0)} s in all.</p>
<table><tr><th>algorithm</th><th>iteration</th><th>win rate vs base</th><th>vs previous</th>${hasProbes ? "<th>probe exploitability</th><th>average policy's</th>" : ""}<th>seconds (median)</th></tr>${rows}</table>
<h2>Iteration ${c.iterations}, seed by seed</h2>
<table><tr><th>seed</th>${perSeedHead}</tr>${perSeedRows}</table>
${c.base ? `<p>Base policy (iteration 0) probe exploitability: ${cell(c.base.probe_exploitability)}.</p>` : ""}
<h2>Head to head: the final policies judged together</h2>
<p>Win rate of the row's final policy against the column's, mean over seeds (${h.comparisons.reduce((a, b) => a + b, 0)} judgements${h.skipped.some((s) => s > 0) ? `, ${h.skipped.reduce((a, b) => a + b, 0)} refused by the oracle` : ""}).</p>
${matrix}
<div class="grid">
${lineChartSvg(medians((it) => it.win_rate_vs_base, 0.5), { title: "Win rate vs base (median over seeds)", xLabel: "iteration", yLabel: "win rate", integerX: true, yDomain: [0, 1] })}
${lineChartSvg(medians((it) => it.win_rate_vs_previous), { title: "Win rate vs previous (median over seeds)", xLabel: "iteration", yLabel: "win rate", integerX: true, yDomain: [0, 1] })}
${hasProbes ? lineChartSvg(medians((it) => it.probe_exploitability, c.base?.probe_exploitability.median), { title: "Probe exploitability (median over seeds)", xLabel: "iteration", yLabel: "max over probes of P(probe ≻ policy) − ½", integerX: true }) : ""}
${hasProbes ? lineChartSvg(medians((it) => it.average_policy_probe_exploitability, c.base?.probe_exploitability.median), { title: "Probe exploitability of the average policy π̄_t (median over seeds)", xLabel: "iteration", yLabel: "max over probes of P(probe ≻ π̄_t) − ½", integerX: true }) : ""}
</div></body></html>
`;
}
