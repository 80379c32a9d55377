/**
 * `sppo run [--config FILE] [--out DIR] [--iterations N] [--generator ADDR --oracle ADDR --optimizer ADDR]`:
 * the self-play loop. Without --config it runs the embedded default task (assets/default-task.yaml).
 */
import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import { loadConfig } from "../../lib/config/load.js";
import { runSelfPlay } from "../../pipeline/run.js";

export const DEFAULT_TASK_CONFIG = "assets/default-task.yaml";

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`not a positive integer: ${value}`);
  return n;
}

export function register(program: Command): void {
  program
    .command("run")
    .description("run the SPPO self-play loop (starts the three services in-process unless their addresses are given)")
    .option("--config <file>", `YAML or JSON config (default: the embedded default task, ${DEFAULT_TASK_CONFIG})`)
    .option("--out <dir>", "output directory: summary.json, metrics.jsonl, report.html, checkpoints/", "runs/latest")
    .option("--iterations <n>", "SPPO iterations (overrides pipeline.iterations)", positiveInt)
    .option("--generator <addr>", "address of a running generator (e.g. dns:///sppo-generator:50051)")
    .option("--oracle <addr>", "address of a running preference oracle")
    .option("--optimizer <addr>", "address of a running optimizer")
    .action(async (flags: { config?: string; out: string; iterations?: number; generator?: string; oracle?: string; optimizer?: string }) => {
      const given = [flags.generator, flags.oracle, flags.optimizer].filter(Boolean).length;
      if (given !== 0 && given !== 3) {
        throw Object.assign(new Error("give all three of --generator, --oracle and --optimizer, or none to start them here"), { userFacing: true });
      }
      const config = loadConfig({ file: flags.config ?? DEFAULT_TASK_CONFIG, overrides: { pipeline: { iterations: flags.iterations } } });
      const summary = await runSelfPlay({
        config,
        outDir: flags.out,
        targets: given === 3 ? { generator: flags.generator!, oracle: flags.oracle!, optimizer: flags.optimizer! } : undefined,
      });
      process.stdout.write(`${JSON.stringify({ out: flags.out, ...summary })}\n`);
    });
}
