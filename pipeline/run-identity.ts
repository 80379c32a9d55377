/**
 * A run's identity as the optimizer sees it (proto RunIdentity): the run id (one per `sppo run`, kept in run.json so
 * that `--resume`/`--continue` send it again) and a fingerprint of what decides the run's results — the base policy
 * (its hash, as the generator serves version 0), the settings that decide results (run-state.ts `runSettings`,
 * training parameters included) and the prompt split. With it a long-lived optimizer trains a new run from the base
 * instead of answering it with an earlier run's policy, and refuses to continue a run under another configuration.
 */
import { createHash, randomBytes } from "node:crypto";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type RunIdentity, RunIdentitySchema, type TrainingParamsSchema } from "../gen/sppo/v1/optimizer_pb.js";
import { Algorithm, OptimizerKind, PairSelection } from "../gen/sppo/v1/optimizer_pb.js";
import type { OptimizerConfig } from "../lib/config/optimizer.js";
import type { Config } from "../lib/config/schema.js";
import type { PromptSplits } from "./prompts.js";
import { runSettings } from "./run-state.js";

/** A new run id: the start time (UTC, to the second) and 6 random hex digits, e.g. "20261205-101500-3fa9c1". */
export function newRunId(now = new Date()): string {
  const stamp = now.toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
  return `${stamp}-${randomBytes(3).toString("hex")}`;
}

/** JSON with object keys sorted at every level, so that equal settings always hash the same. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    return `{${entries
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`)
      .join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/**
 * Hex SHA-256 over the base policy's hash, the settings that decide results and every prompt (id and text) of each
 * iteration's split and of the evaluation set.
 */
export function runFingerprint(baseSha256: string, config: Config, splits: PromptSplits): string {
  const prompts = (set: readonly { id: string; prompt: string }[]) => sha256(canonicalJson(set.map((p) => [p.id, p.prompt])));
  return sha256(
    canonicalJson({
      format: 1,
      base: baseSha256,
      settings: runSettings(config),
      prompts: { iterations: splits.iterations.map(prompts), evaluation: prompts(splits.evaluation) },
    }),
  );
}

/** The IterationStart's run identity. */
export function runIdentity(runId: string, baseSha256: string, config: Config, splits: PromptSplits): RunIdentity {
  return create(RunIdentitySchema, { runId, fingerprint: runFingerprint(baseSha256, config, splits), baseSha256 });
}

const ALGORITHMS = { sppo: Algorithm.SPPO, sppo_hard: Algorithm.SPPO_HARD, dpo: Algorithm.DPO, ipo: Algorithm.IPO } as const;

/**
 * The run's training parameters, sent with every IterationStart: a remote optimizer trains the run as its config
 * says, not as the optimizer's own config does. (The seed is left out: the optimizer's RNG runs on across
 * iterations, and a sent seed would reseed it at every one.)
 */
export function trainingParams(optimizer: OptimizerConfig): MessageInitShape<typeof TrainingParamsSchema> {
  return {
    algorithm: ALGORITHMS[optimizer.algorithm],
    pairSelection: optimizer.pairSelection === "all" ? PairSelection.ALL : PairSelection.CHOSEN_REJECTED,
    eta: optimizer.eta,
    learningRate: optimizer.learningRate,
    optimizer: optimizer.optimizer === "adam" ? OptimizerKind.ADAM : OptimizerKind.RMSPROP,
    batchSize: optimizer.batchSize,
    gradientAccumulation: optimizer.gradientAccumulation,
    warmupRatio: optimizer.warmupRatio,
    epochs: optimizer.epochs,
    maxGradNorm: optimizer.maxGradNorm,
  };
}
