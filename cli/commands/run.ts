/**
 * `sppo run [--config FILE] [--out DIR] [--iterations N] [--generator ADDR] [--oracle ADDR] [--optimizer ADDR]
 * [--log-format json|pretty]`: the self-play loop; the services not given are started in this process. Without
 * --config it runs the embedded default task (assets/default-task.yaml). It serves the live dashboard and prints
 * `dashboard: URL` on stderr as it starts.
 * `sppo run --resume DIR` continues a run that stopped, with the configuration it was started with; `--continue`
 * continues the unfinished run in --out, if there is one, else starts one (what a retried Kubernetes Job runs).
 * SIGINT (Ctrl-C) or SIGTERM stops the run: no new prompts, the journal and a checkpoint saved, one line saying how
 * to continue, exit status 130 (SIGINT) or 143 (SIGTERM); a second signal ends the process at once.
 */
import { resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import type { RunOptions, RunSummary } from "../../pipeline/run.js";
import type { RunInvocation, RunTargets } from "../../pipeline/run-state.js";

export const DEFAULT_TASK_CONFIG = "assets/default-task.yaml";

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`not a positive integer: ${value}`);
  return n;
}

/**
 * The run's one owner of SIGINT and SIGTERM: the first signal asks the loop to stop (it finishes the prompts in
 * flight, saves the journal and a checkpoint, and returns). The listeners are removed then, so a second signal falls
 * through to Node's default and ends the process at once; the journal, written a whole prompt group at a time,
 * loses nothing but the prompts in flight, which `--resume` samples again.
 */
async function runUntilStopped(options: Omit<RunOptions, "stop">): Promise<RunSummary> {
  const [{ log }, { runSelfPlay }] = await Promise.all([import("../../lib/log.js"), import("../../pipeline/run.js")]);
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    remove();
    log.warn({ signal }, "stopping: no new prompts; finishing those in flight, then saving the journal and a checkpoint (the same signal again exits at once)");
    controller.abort(signal);
  };
  const remove = () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    return await runSelfPlay({ ...options, stop: controller.signal });
  } finally {
    remove();
  }
}

/** A stopped run: one line on stderr saying where it stopped and how to continue, and the signal's exit status. */
function reportStopped(out: string, stopped: NonNullable<RunSummary["stopped"]>): void {
  const checkpoint = stopped.checkpoint ? `, checkpoint ${stopped.checkpoint}` : "";
  process.stderr.write(
    `sppo: stopped on ${stopped.reason} in iteration ${stopped.iteration} (${stopped.stage}; ${stopped.scoredPrompts} of ${stopped.totalPrompts} prompts journaled${checkpoint}): continue with \`sppo run --resume ${out}\`\n`,
  );
  process.exitCode = stopped.reason === "SIGTERM" ? 143 : 130;
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
  logFormat?: "json" | "pretty";
}

/** pretty on a terminal, JSON elsewhere (CI, Kubernetes, a pipe), unless --log-format says. */
export function logFormatOf(flag: RunFlags["logFormat"], stderrIsTTY = process.stderr.isTTY === true): "json" | "pretty" {
  return flag ?? (stderrIsTTY ? "pretty" : "json");
}

export function register(program: Command): void {
  program
    .command("run")
    .description("run the SPPO self-play loop (starts in this process each service whose address is not given)")
    .option("--config <file>", `YAML or JSON config (default: the embedded default task, ${DEFAULT_TASK_CONFIG})`)
    .option("--out <dir>", "output directory: summary.json, metrics.jsonl, report.html, checkpoints/, journal/, run.json", "runs/latest")
    .option("--iterations <n>", "SPPO iterations (overrides pipeline.iterations)", positiveInt)
    .option("--generator <addr>", "address of a running generator (e.g. dns:///sppo-generator:50051); any of the three may be given, the others start here")
    .option("--oracle <addr>", "address of a running preference oracle")
    .option("--optimizer <addr>", "address of a running optimizer")
    .option(
      "--resume <dir>",
      "continue the stopped run in DIR with the config it started with, without sampling again the prompts already scored (service addresses may be given anew)",
    )
    .option("--continue", "if --out holds an unfinished run, continue it (its settings must match the config given), else start one: for jobs that are retried")
    .addOption(
      new Option("--log-format <format>", "pretty: progress bars and one line per iteration, logs in <out>/run.log; json: JSON logs on stderr (default: pretty on a terminal, else json)").choices(["json", "pretty"]),
    )
    .action(async (flags: RunFlags) => {
      // Loaded here, not at the top: cli/main.ts imports every command's declaration. The loop itself (tfjs,
      // onnxruntime, grpc-js) loads once the config has been read (runUntilStopped), so a bad one is a quick line.
      const [{ Code, RpcError }, { loadConfig }, { checkSameSettings, readRunState, unfinishedRun }, { summaryTable }] = await Promise.all([
        import("../../lib/errors.js"),
        import("../../lib/config/load.js"),
        import("../../pipeline/run-state.js"),
        import("../../pipeline/summary-table.js"),
      ]);
      const given: RunTargets = Object.fromEntries((["generator", "oracle", "optimizer"] as const).flatMap((name) => (flags[name] ? [[name, flags[name]]] : [])));
      const targets = Object.keys(given).length > 0 ? given : undefined;
      const logFormat = logFormatOf(flags.logFormat);
      const display = { logFormat, onDashboard: (url: string) => process.stderr.write(`dashboard: ${url}\n`) };
      const report = (out: string, summary: RunSummary) => {
        if (summary.stopped) reportStopped(out, summary.stopped);
        else process.stdout.write(logFormat === "pretty" ? summaryTable(summary, out) : `${JSON.stringify({ out, ...summary })}\n`);
      };
      if (flags.resume !== undefined) {
        if (flags.config !== undefined || flags.iterations !== undefined) {
          throw new RpcError(Code.INVALID_ARGUMENT, "--resume continues a run with the config it started with: leave out --config and --iterations");
        }
        const state = readRunState(flags.resume);
        const invocation: RunInvocation = { ...state.invocation, ...(targets ? { targets } : {}) };
        const config = loadConfig({ file: invocation.config, overrides: { pipeline: { iterations: invocation.iterations } } });
        checkSameSettings(state, config, flags.resume);
        report(flags.resume, await runUntilStopped({ config, outDir: flags.resume, targets: invocation.targets, resume: true, invocation, ...display }));
        return;
      }
      const file = resolve(flags.config ?? DEFAULT_TASK_CONFIG);
      const config = loadConfig({ file, overrides: { pipeline: { iterations: flags.iterations } } });
      const invocation: RunInvocation = { config: file, ...(flags.iterations !== undefined ? { iterations: flags.iterations } : {}), ...(targets ? { targets } : {}) };
      const unfinished = flags.continue ? unfinishedRun(flags.out) : undefined;
      if (unfinished) checkSameSettings(unfinished.state, config, flags.out);
      const resume = unfinished !== undefined;
      report(flags.out, await runUntilStopped({ config, outDir: flags.out, targets, invocation, resume, ...display }));
    });
}
