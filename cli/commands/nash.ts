/**
 * `sppo nash --matrix FILE --iterations T [--eta E] [--json] [--algorithm sppo|dpo|ipo] [--samples K] [--seed S]
 *  [--plot FILE.svg]`: plays the constant-sum preference game of FILE (docs/algorithm.md "sppo nash")
 * and reports how close the average policy gets to a Nash equilibrium.
 *
 * --algorithm sppo runs the exact multiplicative-weights update (top-level fields) and the sampled square-loss
 * version (`sampled`); dpo/ipo run the iterative Bradley-Terry fit on the same kind of samples (top-level fields),
 * with the exact and sampled SPPO results beside them (`sppo`, `sppo_sampled`) for comparison. With --plot FILE the
 * exploitability against T is drawn into FILE (lib/chart/line-chart.ts); without it no file is written. The
 * report's `sweep` repeats the exact update for horizons 10, 30, 100, ... up to T, each with its own default η, which
 * is the form of Theorem 4.1 (exploitability of π̄_T against T when η = Θ(1/√T)).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { basename, resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import {
  defaultEta,
  hedgeBound,
  type NashRun,
  parsePreferenceGame,
  runExactSppo,
  runSampled,
  type SampledAlgorithm,
} from "../../lib/sppo/nash.js";
import { type ChartSeries, lineChartSvg } from "../../lib/chart/line-chart.js";
import { Code, kindError, RpcError } from "../../lib/errors.js";

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

function positiveInt(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${value}`);
    return n;
  };
}

function positiveNumber(value: string): number {
  const n = Number(value);
  if (!(Number.isFinite(n) && n > 0)) throw new InvalidArgumentError(`must be a positive number, got ${value}`);
  return n;
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

function formatPolicy(actions: string[], policy: number[]): string {
  return actions.map((a, i) => `${a} ${policy[i].toFixed(3)}`).join(", ");
}

export function register(program: Command): void {
  program
    .command("nash")
    .description("play a finite constant-sum preference game with SPPO (and DPO/IPO baselines) and report exploitability")
    .requiredOption("--matrix <file>", 'JSON {"actions": [names], "P": [[P(a_i ≻ a_j)]], "initial_policy"?: [...]}')
    .requiredOption("--iterations <T>", "iterations T", positiveInt("--iterations"))
    .option("--eta <E>", "step size η (default √(8 ln n / T), Θ(1/√T))", positiveNumber)
    .addOption(new Option("--algorithm <name>", "sppo, or a Bradley-Terry baseline fitted on the same samples").choices(["sppo", "dpo", "ipo"]).default("sppo"))
    .option("--samples <K>", "actions sampled per round by the sampled procedures", positiveInt("--samples"), 5)
    .option("--seed <S>", "seed of the sampled procedures", (v) => {
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`--seed must be a non-negative integer, got ${v}`);
      return n;
    }, 0)
    .option("--inner-steps <N>", "gradient steps per round of the sampled procedures", positiveInt("--inner-steps"), 50)
    .option("--json", "print the full report as JSON on stdout", false)
    .option("--plot <file>", "write an SVG plot of exploitability against T to FILE (none without it)")
    // Kept so that scripts written when a plot was written by default still run; it is what happens anyway.
    .addOption(new Option("--no-plot", "write no plot (the default)").hideHelp())
    .action((flags: { matrix: string; iterations: number; eta?: number; algorithm: SampledAlgorithm; samples: number; seed: number; innerSteps: number; json: boolean; plot?: string | boolean }) => {
      if (flags.samples < 2) throw new InvalidArgumentError("--samples must be at least 2");
      const plot = typeof flags.plot === "string" ? flags.plot : undefined;
      const options: NashOptions = { ...flags, plot };
      const { report, svg } = runNash(options);
      let plotPath: string | undefined;
      if (plot !== undefined) {
        plotPath = resolve(plot);
        try {
          writeFileSync(plotPath, svg);
        } catch (err) {
          throw new RpcError(Code.FAILED_PRECONDITION, `--plot ${plot}: cannot write it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err });
        }
        report.plot = plotPath;
      }
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(report)}\n`);
        return;
      }
      const actions = report.actions as string[];
      const lines = [
        `${flags.algorithm === "sppo" ? "SPPO (exact multiplicative weights)" : `iterative ${flags.algorithm.toUpperCase()}`}, T = ${flags.iterations}, η = ${report.eta}`,
        `  average policy  ${formatPolicy(actions, report.average_policy as number[])}`,
        `  last policy     ${formatPolicy(actions, report.last_policy as number[])}`,
        `  exploitability  ${(report.exploitability as number).toExponential(3)} (average), ${(report.last_exploitability as number).toExponential(3)} (last)`,
      ];
      const sampled = (flags.algorithm === "sppo" ? report.sampled : report.sppo_sampled) as { exploitability: number };
      lines.push(`  SPPO sampled (K = ${flags.samples}) exploitability ${sampled.exploitability.toExponential(3)}`);
      if (flags.algorithm !== "sppo") lines.push(`  SPPO exact exploitability ${((report.sppo as { exploitability: number }).exploitability).toExponential(3)}`);
      if (plotPath) lines.push(`  plot: ${plotPath}`);
      process.stdout.write(`${lines.join("\n")}\n`);
    });
}
