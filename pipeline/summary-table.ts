/**
 * The results of `sppo run` as a table for a person (`--log-format pretty`); the same numbers as summary.json, which
 * stays the machine-readable form (and what `--log-format json` prints).
 */
import type { IterationResult } from "./loop.js";

export interface SummaryLike {
  algorithm: string;
  iterations: IterationResult[];
  comparison?: Record<string, IterationResult[]>;
  seconds: number;
}

/** Columns aligned with spaces; the first column left-aligned, numbers right-aligned. */
export function formatTable(head: string[], rows: string[][]): string {
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const fmt = (cells: string[]) => cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join("  ");
  return [fmt(head), widths.map((w) => "─".repeat(w)).join("  "), ...rows.map(fmt)].join("\n");
}

/** The run's iterations (and each compared loss's) as a table, then where the outputs are. */
export function summaryTable(summary: SummaryLike, outDir: string): string {
  const runs: [string, IterationResult[]][] = [[summary.algorithm, summary.iterations], ...Object.entries(summary.comparison ?? {})];
  const probes = runs.some(([, its]) => its.some((r) => r.probe_exploitability !== undefined));
  const dropped = runs.some(([, its]) => its.some((r) => r.skippedPrompts > 0));
  const head = ["algorithm", "iteration", "prompts", ...(dropped ? ["dropped"] : []), "win rate vs base", "vs previous", ...(probes ? ["probe exploitability"] : []), "policy", "seconds"];
  const rows = runs.flatMap(([name, its]) =>
    its.map((r) => [
      name,
      String(r.iteration),
      String(r.prompts),
      ...(dropped ? [String(r.skippedPrompts)] : []),
      r.win_rate_vs_base.toFixed(3),
      r.win_rate_vs_previous.toFixed(3),
      ...(probes ? [r.probe_exploitability?.toFixed(3) ?? ""] : []),
      `v${r.policyVersion}`,
      r.seconds.toFixed(1),
    ]),
  );
  return `${formatTable(head, rows)}\n\n${summary.iterations.length} iterations in ${summary.seconds.toFixed(1)} s. Outputs in ${outDir}: summary.json, report.html, metrics.jsonl, run.log, checkpoints/\n`;
}
