/**
 * What a run keeps in its output directory so that `sppo run --resume DIR` can continue it after the loop stopped:
 *  - run.json: the run's id (the optimizer keeps each run's state apart by it), how the run was started (config
 *    file, flags, service addresses) and the settings that decide its results, to refuse resuming under a changed
 *    configuration;
 *  - summary.json: the finished iterations (written after each one);
 *  - journal/iteration-<t>.jsonl: the open iteration's scored sets (pipeline/journal.ts);
 *  - checkpoints/ and policies/: the embedded optimizer's state, which it resumes from.
 * No secret is written: tokens stay in the environment or their files.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../lib/atomic.js";
import { moveFields } from "../lib/config/moved-fields.js";
import { OPTIMIZER_ALGORITHMS } from "../lib/config/optimizer.js";
import { PIPELINE_MOVED_FIELDS } from "../lib/config/pipeline.js";
import { type Config, configSchema } from "../lib/config/schema.js";
import { Code, RpcError } from "../lib/errors.js";
import type { IterationResult } from "./loop.js";

/** Addresses of the services that run elsewhere; any subset (the loop starts the others itself). */
export type RunTargets = Partial<Record<"generator" | "oracle" | "optimizer", string>>;

/** How `sppo run` was invoked: enough to load the same configuration again. */
export interface RunInvocation {
  /** Absolute path of the config file (the embedded default task when none was given). */
  config: string;
  /** --iterations, when given. */
  iterations?: number;
  /** The remote services, when given (any subset). */
  targets?: RunTargets;
}

export interface RunStateFile {
  format: 1;
  /** The run's id (run-identity.ts), sent to the optimizer with every IterationStart; absent in older run.json files. */
  runId?: string;
  startedAt: string;
  invocation: RunInvocation;
  /** The settings that decide the run's results. */
  settings: Record<string, unknown>;
}

/** Settings that only change how a run is operated (ports, progress, paths, threads), not its results. */
const OPERATIONAL = {
  pipeline: new Set(["progress", "telemetryPort", "dashboardPort", "startupTimeoutMs", "host", "judgedSetEvery", "streamsPerService", "reconnectTimeoutMs", "requestTimeoutMs", "telemetryHistoryEvents", "generateConcurrency", "compareConcurrency", "schedule", "compareSeeds"]),
  optimizer: new Set(["checkpointDir", "policyDir", "checkpointEverySteps", "keepCheckpoints", "resume", "baseMismatch", "backend", "trainInWorker", "runId"]),
};

/** The oracle settings that decide its judgements (the rest is batching, queues and threads). */
const ORACLE_JUDGEMENT = new Set(["backend", "modelDir", "syntheticStrength", "syntheticCycleMargins"]);

/** The pipeline, optimizer and oracle settings a resumed run must share with the run it continues. */
export function runSettings(config: Config): Record<string, unknown> {
  const pick = (section: Record<string, unknown>, keep: (key: string) => boolean) => Object.fromEntries(Object.entries(section).filter(([key]) => keep(key)));
  return {
    pipeline: pick(config.pipeline as unknown as Record<string, unknown>, (key) => !OPERATIONAL.pipeline.has(key)),
    optimizer: pick(config.optimizer as unknown as Record<string, unknown>, (key) => !OPERATIONAL.optimizer.has(key)),
    oracle: pick(config.oracle as unknown as Record<string, unknown>, (key) => ORACLE_JUDGEMENT.has(key)),
  };
}

export function writeRunState(outDir: string, invocation: RunInvocation, config: Config, runId = ""): void {
  mkdirSync(outDir, { recursive: true });
  const state: RunStateFile = { format: 1, runId, startedAt: new Date().toISOString(), invocation, settings: runSettings(config) };
  writeFileAtomic(join(outDir, "run.json"), `${JSON.stringify(state, null, 2)}\n`);
}

/** Reads DIR/run.json; the error says what is missing or damaged. */
export function readRunState(outDir: string): RunStateFile {
  const path = join(outDir, "run.json");
  if (!existsSync(path)) throw new RpcError(Code.NOT_FOUND, `--resume ${outDir}: no run.json there, so no run to continue (start one with \`sppo run --out ${outDir}\`)`);
  let state: RunStateFile;
  try {
    state = JSON.parse(readFileSync(path, "utf8")) as RunStateFile;
  } catch (err) {
    throw new RpcError(Code.DATA_LOSS, `${path}: not valid JSON (${(err as Error).message})`);
  }
  if (state.format !== 1 || typeof state.invocation?.config !== "string" || typeof state.settings !== "object") {
    throw new RpcError(Code.FAILED_PRECONDITION, `${path}: not a run state this version of sppo writes (format ${String(state.format)})`);
  }
  return state;
}

/**
 * Refuses to resume when a setting that decides the results differs; names every such field. `what` starts the
 * message. @default `--resume <outDir>`
 */
export function checkSameSettings(state: RunStateFile, config: Config, outDir: string, what = `--resume ${outDir}`): void {
  const now = runSettings(config);
  // A setting added after the run started was at its default then.
  const defaults = runSettings(configSchema.parse({}));
  const changed: string[] = [];
  for (const section of ["pipeline", "optimizer", "oracle"] as const) {
    let recorded = (state.settings[section] ?? {}) as Record<string, unknown>;
    // A run started before a pipeline field moved recorded it at its old place.
    if (section === "pipeline") recorded = moveFields(recorded, PIPELINE_MOVED_FIELDS).value as Record<string, unknown>;
    const before = { ...(defaults[section] as Record<string, unknown>), ...recorded };
    const after = now[section] as Record<string, unknown>;
    for (const key of new Set([...Object.keys(recorded), ...Object.keys(after)])) {
      if (JSON.stringify(before[key]) !== JSON.stringify(after[key])) changed.push(`${section}.${key}: ${JSON.stringify(before[key])} → ${JSON.stringify(after[key])}`);
    }
  }
  if (changed.length > 0) {
    throw new RpcError(Code.FAILED_PRECONDITION, `${what}: the configuration changed since the run started, so its results would mix two runs:\n  ${changed.join("\n  ")}`);
  }
}

/** The iterations summary.json records as finished (none when it does not exist yet). */
export function finishedIterations(outDir: string): IterationResult[] {
  const path = join(outDir, "summary.json");
  if (!existsSync(path)) return [];
  try {
    const summary = JSON.parse(readFileSync(path, "utf8")) as { iterations?: IterationResult[] };
    return summary.iterations ?? [];
  } catch (err) {
    throw new RpcError(Code.DATA_LOSS, `${path}: not valid JSON (${(err as Error).message}); it records the finished iterations`);
  }
}

/** The run in DIR when it has not finished all its planned iterations (run.json, summary.json); else undefined. */
export function unfinishedRun(outDir: string): { state: RunStateFile; planned: number; done: number } | undefined {
  if (!existsSync(join(outDir, "run.json"))) return undefined;
  const state = readRunState(outDir);
  const planned = Number((state.settings.pipeline as { iterations?: number } | undefined)?.iterations ?? 0);
  const done = finishedIterations(outDir).length;
  return done < planned ? { state, planned, done } : undefined;
}

/**
 * Readies DIR for a new run. A finished run there (run.json) is replaced; an unfinished one is kept, and the error
 * says how to continue it, since replacing it would throw its checkpoints away. Without run.json only the files a
 * run appends to are removed: nothing else there is assumed to be ours.
 */
export function prepareFreshOutDir(outDir: string): void {
  if (!existsSync(join(outDir, "run.json"))) {
    for (const entry of ["metrics.jsonl", "journal"]) rmSync(join(outDir, entry), { recursive: true, force: true });
    return;
  }
  const unfinished = unfinishedRun(outDir);
  if (unfinished) {
    throw new RpcError(
      Code.FAILED_PRECONDITION,
      `${outDir} holds an unfinished run (${unfinished.done} of ${unfinished.planned} iterations done): continue it with \`sppo run --resume ${outDir}\`, or choose another --out (or remove it)`,
    );
  }
  const entries = ["run.json", "summary.json", "report.html", "metrics.jsonl", "journal", "checkpoints", "policies", ...OPTIMIZER_ALGORITHMS];
  for (const entry of entries) rmSync(join(outDir, entry), { recursive: true, force: true });
}
