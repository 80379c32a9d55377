/**
 * What `sppo nash` computes (cli/commands/nash.ts declares the command): the report of the game in a matrix file and
 * the SVG plot of exploitability against T. Tests: test/cli/commands/nash.test.ts.
 */
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import {
  defaultEta,
  hedgeBound,
  type NashRun,
  parsePreferenceGame,
  runExactSppo,
  runSampled,
  type SampledAlgorithm,
} from "../lib/sppo/nash.js";
import { type ChartSeries, lineChartSvg } from "../lib/chart/line-chart.js";
import { kindError } from "../lib/errors.js";

export interface NashOptions {
  matrix: string;
  iterations: number;
  eta?: number;
  algorithm: SampledAlgorithm;
  samples: number;
  seed: number;
  /** Inner gradient-descent steps of the sampled procedures. */
  innerSteps: number;
  json: boolean;
  /** Where to write the SVG plot; none when unset. */
  plot?: string;
}

function summary(run: NashRun) {
  return {
    average_policy: run.averagePolicy,
    last_policy: run.lastPolicy,
    exploitability: run.exploitability,
    last_exploitability: run.lastExploitability,
    trace: run.trace,
  };
}

/** What `sppo nash` computes: the JSON report and the SVG plot. Pure apart from reading the matrix file. */
export function runNash(options: NashOptions): { report: Record<string, unknown>; svg: string } {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(options.matrix, "utf8"));
  } catch (err) {
    throw kindError("game-file", `${options.matrix}: cannot read it as JSON (${(err as Error).message})`);
  }
  const game = parsePreferenceGame(data, options.matrix);
  const T = options.iterations;
  const eta = options.eta ?? defaultEta(game.actions.length, T);
  const sampledOptions = { iterations: T, eta, samples: options.samples, seed: options.seed, innerSteps: options.innerSteps };
  const exact = runExactSppo(game, { iterations: T, eta });
  const sampledSppo = runSampled(game, { ...sampledOptions, algorithm: "sppo" });
  const bound = hedgeBound(game.initialPolicy, eta, T);
  const head = {
    algorithm: options.algorithm,
    actions: game.actions,
    iterations: T,
    eta,
    eta_source: options.eta === undefined ? "default sqrt(8 ln n / T)" : "--eta",
    samples: options.samples,
    seed: options.seed,
  };
  const sampledReport = (run: ReturnType<typeof runSampled>) => ({
    ...summary(run),
    skipped_rounds: run.skippedRounds,
    mean_final_loss: run.meanFinalLoss,
  });
  let report: Record<string, unknown>;
  const series: ChartSeries[] = [];
  const points = (run: NashRun) => run.trace.map((p) => ({ x: p.t, y: p.exploitability }));
  if (options.algorithm === "sppo") {
    report = { ...head, ...summary(exact), hedge_bound: bound, sampled: sampledReport(sampledSppo) };
  } else {
    const baseline = runSampled(game, { ...sampledOptions, algorithm: options.algorithm });
    report = {
      ...head,
      ...sampledReport(baseline),
      sppo: { ...summary(exact), hedge_bound: bound },
      sppo_sampled: sampledReport(sampledSppo),
    };
    series.push({ label: `iterative ${options.algorithm.toUpperCase()} (K=${options.samples})`, points: points(baseline), color: "#d62728" });
  }
  series.push({ label: "SPPO exact (MW)", points: points(exact), color: "#1f77b4" });
  series.push({ label: `SPPO sampled (K=${options.samples})`, points: points(sampledSppo), color: "#2ca02c" });
  series.push({
    label: "Hedge bound",
    // Exploitability never exceeds ½, so the bound is drawn only where it says something.
    points: exact.trace.map((p) => ({ x: p.t, y: hedgeBound(game.initialPolicy, eta, p.t) })).filter((p) => p.y <= 0.5),
    color: "#7f7f7f",
    dashed: true,
  });
  // The theorem's own statement: a separate run for each horizon T' with its own η = √(8 ln n / T'), so the
  // exploitability of π̄_T' can be read against T' (log-spaced 10, 30, 100, ... up to T).
  const sweep: { T: number; eta: number; exploitability: number; hedge_bound: number }[] = [];
  for (const horizon of sweepHorizons(T)) {
    const etaT = defaultEta(game.actions.length, horizon);
    const run = runExactSppo(game, { iterations: horizon, eta: etaT });
    sweep.push({ T: horizon, eta: etaT, exploitability: run.exploitability, hedge_bound: hedgeBound(game.initialPolicy, etaT, horizon) });
  }
  report.sweep = sweep;
  series.push({ label: "SPPO exact, η(T) per run", points: sweep.map((p) => ({ x: p.T, y: p.exploitability })), color: "#9467bd" });
  const svg = lineChartSvg(series, {
    title: `${basename(options.matrix)}: exploitability of the average policy (η = ${Number(eta.toPrecision(3))}, T = ${T})`,
    xLabel: "t: rounds of one run; T: horizon of a separate run (sweep)",
    yLabel: "max_i P(a_i ≻ π̄_t) − ½",
    xScale: "log",
    yScale: "log",
    width: 900,
    height: 440,
  });
  return { report, svg };
}

/** 10, 30, 100, 300, ... below T, then T itself. */
export function sweepHorizons(T: number): number[] {
  const out: number[] = [];
  for (let decade = 10; decade < T; decade *= 10) {
    out.push(decade);
    if (3 * decade < T) out.push(3 * decade);
  }
  out.push(T);
  return out;
}
