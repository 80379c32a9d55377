/**
 * `sppo run [--config FILE] [--out DIR] [--iterations N] [--generator ADDR --oracle ADDR --optimizer ADDR]`:
 * the self-play loop. Without --config it runs the embedded default task (assets/default-task.yaml).
 * `sppo run --resume DIR` continues a run that stopped, with the configuration it was started with; `--continue`
 * continues the unfinished run in --out, if there is one, else starts one (what a retried Kubernetes Job runs).
 */
import { resolve } from "node:path";
import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import { Code, RpcError } from "../../lib/errors.js";
import { loadConfig } from "../../lib/config/load.js";
import { runSelfPlay } from "../../pipeline/run.js";
import { checkSameSettings, type RunInvocation, readRunState, unfinishedRun } from "../../pipeline/run-state.js";

export const DEFAULT_TASK_CONFIG = "assets/default-task.yaml";

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`not a positive integer: ${value}`);
  return n;
}

interface RunFlags {
  config?: string;
  out: string;
  iterations?: number;
  generator?: string;
  oracle?: string;
  optimizer?: string;
  resume?: string;
  continue?: boolean;
}

export function register(program: Command): void {
  program
    .command("run")
    .description("run the SPPO self-play loop (starts the three services in-process unless their addresses are given)")
    .option("--config <file>", `YAML or JSON config (default: the embedded default task, ${DEFAULT_TASK_CONFIG})`)
    .option("--out <dir>", "output directory: summary.json, metrics.jsonl, report.html, checkpoints/, journal/, run.json", "runs/latest")
    .option("--iterations <n>", "SPPO iterations (overrides pipeline.iterations)", positiveInt)
    .option("--generator <addr>", "address of a running generator (e.g. dns:///sppo-generator:50051)")
    .option("--oracle <addr>", "address of a running preference oracle")
    .option("--optimizer <addr>", "address of a running optimizer")
    .option(
      "--resume <dir>",
      "continue the stopped run in DIR with the config it started with, without sampling again the prompts already scored (service addresses may be given anew)",
    )
    .option("--continue", "if --out holds an unfinished run, continue it (its settings must match the config given), else start one: for jobs that are retried")
    .action(async (flags: RunFlags) => {
      const given = [flags.generator, flags.oracle, flags.optimizer].filter(Boolean).length;
      if (given !== 0 && given !== 3) {
        throw new RpcError(Code.INVALID_ARGUMENT, "give all three of --generator, --oracle and --optimizer, or none to start them here");
      }
      const targets = given === 3 ? { generator: flags.generator!, oracle: flags.oracle!, optimizer: flags.optimizer! } : undefined;
      if (flags.resume !== undefined) {
        if (flags.config !== undefined || flags.iterations !== undefined) {
          throw new RpcError(Code.INVALID_ARGUMENT, "--resume continues a run with the config it started with: leave out --config and --iterations");
        }
        const state = readRunState(flags.resume);
        const invocation: RunInvocation = { ...state.invocation, ...(targets ? { targets } : {}) };
        const config = loadConfig({ file: invocation.config, overrides: { pipeline: { iterations: invocation.iterations } } });
        checkSameSettings(state, config, flags.resume);
        const summary = await runSelfPlay({ config, outDir: flags.resume, targets: invocation.targets, resume: true, invocation });
        process.stdout.write(`${JSON.stringify({ out: flags.resume, ...summary })}\n`);
        return;
      }
      const file = resolve(flags.config ?? DEFAULT_TASK_CONFIG);
      const config = loadConfig({ file, overrides: { pipeline: { iterations: flags.iterations } } });
      const invocation: RunInvocation = { config: file, ...(flags.iterations !== undefined ? { iterations: flags.iterations } : {}), ...(targets ? { targets } : {}) };
      const unfinished = flags.continue ? unfinishedRun(flags.out) : undefined;
      if (unfinished) checkSameSettings(unfinished.state, config, flags.out);
      const resume = unfinished !== undefined;
      const summary = await runSelfPlay({ config, outDir: flags.out, targets, invocation, resume });
      process.stdout.write(`${JSON.stringify({ out: flags.out, ...summary })}\n`);
    });
}
