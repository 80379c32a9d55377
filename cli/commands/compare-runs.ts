/**
 * `sppo compare-runs --config FILE --out DIR [--seeds N] [--algorithms sppo,dpo,...] [--iterations T] [--continue]`:
 * N seeds × the algorithms, each a full self-play run from the same base on the embedded services, then the final
 * policies head to head; writes DIR/comparison.json and DIR/comparison.html (pipeline/compare-runs.ts).
 */
import { resolve } from "node:path";
import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import { OPTIMIZER_ALGORITHMS, type OptimizerAlgorithm } from "../../lib/sppo/algorithms.js";
import { DEFAULT_TASK_CONFIG } from "./run.js";

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`not a positive integer: ${value}`);
  return n;
}

/** "sppo,dpo" → ["sppo", "dpo"], each a known loss, none twice. */
export function parseAlgorithms(value: string): OptimizerAlgorithm[] {
  const names = value.split(",").map((s) => s.trim());
  for (const name of names) {
    if (!(OPTIMIZER_ALGORITHMS as readonly string[]).includes(name)) throw new InvalidArgumentError(`unknown algorithm "${name}" (known: ${OPTIMIZER_ALGORITHMS.join(", ")})`);
  }
  if (new Set(names).size !== names.length) throw new InvalidArgumentError(`an algorithm is named twice in "${value}"`);
  return names as OptimizerAlgorithm[];
}

interface CompareRunsFlags {
  config?: string;
  out: string;
  seeds?: number;
  algorithms?: OptimizerAlgorithm[];
  iterations?: number;
  continue?: boolean;
}

export function register(program: Command): void {
  program
    .command("compare-runs")
    .description("compare losses over seeds: N seeds × the algorithms, each a self-play run from the same base, prompts and oracle; the final policies head to head")
    .option("--config <file>", `YAML or JSON config shared by every run (default: the embedded default task, ${DEFAULT_TASK_CONFIG})`)
    .option("--out <dir>", "output directory: comparison.json, comparison.html, and each run in seed-<s>/<algorithm>/", "runs/compare")
    .option("--seeds <n>", "seeds (default: pipeline.compareSeeds); seed i runs with pipeline.seed + i and optimizer.seed + i", positiveInt)
    .option("--algorithms <list>", `comma-separated losses among ${OPTIMIZER_ALGORITHMS.join(", ")} (default: optimizer.algorithm and pipeline.compareAlgorithms)`, parseAlgorithms)
    .option("--iterations <n>", "iterations of every run (default: pipeline.iterations)", positiveInt)
    .option("--continue", "keep the runs already in --out with the same settings: reuse the finished ones, continue the unfinished ones")
    .action(async (flags: CompareRunsFlags) => {
      // Loaded here, not at the top: cli/main.ts imports every command's declaration. The runs (tfjs, onnxruntime,
      // grpc-js) load once the config has been read, so a bad one is a quick line.
      const { loadConfig } = await import("../../lib/config/load.js");
      const file = resolve(flags.config ?? DEFAULT_TASK_CONFIG);
      const config = loadConfig({ file });
      const { compareRuns } = await import("../../pipeline/compare-runs.js");
      const algorithms = flags.algorithms ?? [...new Set([config.optimizer.algorithm, ...config.pipeline.compareAlgorithms])];
      const iterations = flags.iterations ?? config.pipeline.iterations;
      const comparison = await compareRuns({
        config,
        outDir: flags.out,
        seeds: flags.seeds ?? config.pipeline.compareSeeds,
        algorithms,
        iterations,
        continue: flags.continue === true,
        invocation: { config: file, iterations },
      });
      process.stdout.write(`${JSON.stringify({ out: flags.out, ...comparison })}\n`);
    });
}
