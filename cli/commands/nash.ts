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
import { writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import type { SampledAlgorithm } from "../../lib/sppo/nash.js";
import type { NashOptions } from "../run-nash.js";

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
    .action(async (flags: { matrix: string; iterations: number; eta?: number; algorithm: SampledAlgorithm; samples: number; seed: number; innerSteps: number; json: boolean; plot?: string | boolean }) => {
      if (flags.samples < 2) throw new InvalidArgumentError("--samples must be at least 2");
      const plot = typeof flags.plot === "string" ? flags.plot : undefined;
      const options: NashOptions = { ...flags, plot };
      // Loaded here, not at the top: cli/main.ts imports every command's declaration.
      const [{ runNash }, { Code, RpcError }] = await Promise.all([import("../run-nash.js"), import("../../lib/errors.js")]);
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
