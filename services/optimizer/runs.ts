/**
 * Runs as the optimizer tells them apart (proto RunIdentity). An optimizer outlives runs: each run has its own
 * checkpoints and policy versions, and one run is never answered with another's state.
 *
 * Layout: an anonymous run (a client that names no run) uses `checkpointDir` and `policyDir` themselves, as before
 * run identities existed; run R uses `checkpointDir/runs/R/` and `policyDir/runs/R/`. `checkpointDir/current-run`
 * names the run the optimizer last worked for (empty: the anonymous one), which is the run it resumes at start-up.
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { IterationStart } from "../../gen/sppo/v1/optimizer_pb.js";
import { writeFileAtomic } from "../../lib/atomic.js";
import type { OptimizerConfig } from "../../lib/config/optimizer.js";
import { Code, invalidArgument, RpcError } from "../../lib/errors.js";

/** A run: its id and the fingerprint of what decides its results ("" and "" for the anonymous run). */
export interface RunKey {
  runId: string;
  fingerprint: string;
}

export const ANONYMOUS_RUN: RunKey = { runId: "", fingerprint: "" };

const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MARKER = "current-run";

/** The run an IterationStart names (checked: INVALID_ARGUMENT naming the field), with the base it expects. */
export function runOf(msg: IterationStart): RunKey & { baseSha256: string } {
  const run = msg.run;
  if (!run) return { ...ANONYMOUS_RUN, baseSha256: "" };
  if (run.runId !== "" && !RUN_ID.test(run.runId)) {
    throw invalidArgument("start.run.run_id", `"${run.runId}" is not 1 to 64 letters, digits, '.', '_' or '-' starting with a letter or digit`);
  }
  for (const [field, value] of [
    ["fingerprint", run.fingerprint],
    ["base_sha256", run.baseSha256],
  ] as const) {
    if (value !== "" && !/^[0-9a-f]{64}$/.test(value)) throw invalidArgument(`start.run.${field}`, `not a hex SHA-256 ("${value}")`);
  }
  return { runId: run.runId, fingerprint: run.runId === "" ? "" : run.fingerprint, baseSha256: run.baseSha256 };
}

export function sameRun(a: RunKey, b: RunKey): boolean {
  return a.runId === b.runId && a.fingerprint === b.fingerprint;
}

/** How a run is named in logs and messages. */
export function describeRun(run: RunKey): string {
  return run.runId === "" ? "the anonymous run" : `run ${run.runId}`;
}

/** Where run `runId` keeps its checkpoints and policy versions. */
export function runDirs(config: Pick<OptimizerConfig, "checkpointDir" | "policyDir">, runId: string): { checkpointDir: string; policyDir: string } {
  if (runId === "") return { checkpointDir: config.checkpointDir, policyDir: config.policyDir };
  return { checkpointDir: join(config.checkpointDir, "runs", runId), policyDir: join(config.policyDir, "runs", runId) };
}

/** The run the optimizer last worked for ("" when none is recorded, or a marker that is not a run id). */
export function readCurrentRun(checkpointDir: string): string {
  const path = join(checkpointDir, MARKER);
  if (!existsSync(path)) return "";
  const runId = readFileSync(path, "utf8").trim();
  return RUN_ID.test(runId) ? runId : "";
}

export function writeCurrentRun(checkpointDir: string, runId: string): void {
  mkdirSync(checkpointDir, { recursive: true });
  writeFileAtomic(join(checkpointDir, MARKER), `${runId}\n`);
}

/** What to do with a checkpoint trained from another base model than `optimizer.modelDir`. */
export type BaseMismatch = "refuse" | "fresh";

/** The base model a state was trained from, for messages: its hash and, when known, family and size. */
export interface BaseModel {
  sha256: string;
  family?: string;
  parameters?: string;
}

function describeBase(base: BaseModel): string {
  const what = base.family ? `${base.family}${base.parameters ? ` with ${Number(base.parameters).toLocaleString("en-US")} parameters` : ""}, ` : "";
  return `${what}sha256 ${base.sha256.slice(0, 12)}…`;
}

/**
 * FAILED_PRECONDITION for a run (or a checkpoint) on another base model than this optimizer's: names both and what
 * to do.
 */
export function otherBaseError(what: string, theirs: BaseModel, modelDir: string, ours: BaseModel, remedy: string): RpcError {
  return new RpcError(
    Code.FAILED_PRECONDITION,
    `${what} is on another base model (${describeBase(theirs)}) than this optimizer's optimizer.modelDir ${modelDir} (${describeBase(ours)}): ${remedy}`,
  );
}
