/**
 * An iteration's hyper-parameters: the optimizer's config with the IterationStart's overrides applied and checked
 * (INVALID_ARGUMENT names the offending field), and the fresh optimizer each iteration starts with.
 */
import {
  Algorithm,
  OptimizerKind,
  PairSelection,
  type TrainingParams,
} from "../../gen/sppo/v1/optimizer_pb.js";
import type { OptimizerConfig } from "../../lib/config/optimizer.js";
import { invalidArgument } from "../../lib/errors.js";
import type { LossName } from "../../lib/sppo/losses.js";
import type { PairSelectionMode } from "../../lib/sppo/selection.js";
import { Adam, type Optimizer, type OptimizerState, optimizerFromState, RMSprop, type TrainStep } from "../../models/index.js";

/** Hyper-parameters of one iteration: the config with the IterationStart's overrides applied. */
export interface IterationParams {
  algorithm: LossName;
  pairSelection: PairSelectionMode;
  eta: number;
  learningRate: number;
  optimizer: "rmsprop" | "adam";
  batchSize: number;
  gradientAccumulation: number;
  warmupRatio: number;
  epochs: number;
  maxGradNorm: number;
  /** Reseeds the trainer's RNG at the iteration's start when set. */
  seed: number | null;
}

const ALGORITHMS: Record<number, LossName> = {
  [Algorithm.SPPO]: "sppo",
  [Algorithm.SPPO_HARD]: "sppo_hard",
  [Algorithm.DPO]: "dpo",
  [Algorithm.IPO]: "ipo",
};

/** Applies an IterationStart's overrides to the config; INVALID_ARGUMENT names the offending field. */
export function resolveParams(config: OptimizerConfig, p: TrainingParams | undefined): IterationParams {
  const field = (name: string) => `start.params.${name}`;
  const positive = (name: string, v: number | undefined, fallback: number): number => {
    if (v === undefined) return fallback;
    if (!(Number.isFinite(v) && v > 0)) throw invalidArgument(field(name), `must be positive, got ${v}`);
    return v;
  };
  const count = (name: string, v: number | undefined, fallback: number): number => {
    if (v === undefined) return fallback;
    if (!Number.isInteger(v) || v < 1) throw invalidArgument(field(name), `must be a positive integer, got ${v}`);
    return v;
  };
  let algorithm: LossName = config.algorithm;
  if (p && p.algorithm !== Algorithm.UNSPECIFIED) {
    const a = ALGORITHMS[p.algorithm];
    if (!a) throw invalidArgument(field("algorithm"), `unknown value ${p.algorithm}`);
    algorithm = a;
  }
  let pairSelection: PairSelectionMode = config.pairSelection;
  if (p?.pairSelection === PairSelection.CHOSEN_REJECTED) pairSelection = "chosen_rejected";
  else if (p?.pairSelection === PairSelection.ALL) pairSelection = "all";
  else if (p && p.pairSelection !== PairSelection.UNSPECIFIED) throw invalidArgument(field("pair_selection"), `unknown value ${p.pairSelection}`);
  if (pairSelection === "all" && algorithm !== "sppo") {
    throw invalidArgument(field("pair_selection"), `ALL works with the sppo loss only (${algorithm} needs chosen/rejected pairs)`);
  }
  let optimizer = config.optimizer;
  if (p?.optimizer === OptimizerKind.RMSPROP) optimizer = "rmsprop";
  else if (p?.optimizer === OptimizerKind.ADAM) optimizer = "adam";
  else if (p && p.optimizer !== OptimizerKind.UNSPECIFIED) throw invalidArgument(field("optimizer"), `unknown value ${p.optimizer}`);
  const lr = p?.learningRate ?? config.learningRate;
  if (!(Number.isFinite(lr) && lr >= 0)) throw invalidArgument(field("learning_rate"), `must be ≥ 0, got ${lr}`);
  const warmupRatio = p?.warmupRatio ?? config.warmupRatio;
  if (!(warmupRatio >= 0 && warmupRatio <= 1)) throw invalidArgument(field("warmup_ratio"), `must be in [0, 1], got ${warmupRatio}`);
  const seed = p?.seed !== undefined ? p.seed : null;
  if (seed !== null && seed > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument(field("seed"), "must be below 2^53");
  return {
    algorithm,
    pairSelection,
    eta: positive("eta", p?.eta, config.eta),
    learningRate: lr,
    optimizer,
    batchSize: count("batch_size", p?.batchSize, config.batchSize),
    gradientAccumulation: count("gradient_accumulation", p?.gradientAccumulation, config.gradientAccumulation),
    warmupRatio,
    epochs: count("epochs", p?.epochs, config.epochs),
    maxGradNorm: positive("max_grad_norm", p?.maxGradNorm, config.maxGradNorm),
    seed: seed === null ? null : Number(seed),
  };
}

/**
 * The iteration's optimizer, fresh (the official code starts each iteration as a new training run) or resumed from
 * `state`: the engine's own kind where it has one (models/ `TrainStep.optimizer`), else tfjs's.
 */
export function iterationOptimizer(engine: TrainStep, kind: IterationParams["optimizer"], state?: OptimizerState): Optimizer {
  if (engine.optimizer) return engine.optimizer(kind, state);
  if (state) return optimizerFromState(state);
  return kind === "adam" ? new Adam() : new RMSprop();
}
