/**
 * The optimizer's core, testable without gRPC: consumes the Train stream's IterationStart / TrainingExample /
 * IterationEnd messages, groups examples by prompt, selects responses (lib/sppo), forms batches, takes optimizer
 * steps with the policy engine (models/), emits telemetry, publishes policy versions and writes/reads checkpoints.
 *
 * One iteration (DESIGN §2 step 5, as the official code runs it):
 *  - IterationStart fixes the hyper-parameters (config ← per-iteration overrides), a fresh optimizer (the official
 *    code starts each iteration as a new training run from π_t) and the schedule: warm-up over
 *    ceil(warmupRatio · S) steps, then linear decay to 0 at S = epochs · ceil(total_prompts / prompts per step).
 *  - A prompt's group is complete when `group_size` examples arrived; it becomes a unit of 2 responses (chosen,
 *    rejected) or K (all). A step takes ceil(batchSize / unit size) units, split into `gradientAccumulation`
 *    micro-batches whose losses are weighted by their share of the step's responses (so the step's loss is the mean
 *    over the whole batch, whatever the split). Gradients are clipped to `maxGradNorm` (global norm).
 *  - Epoch 1 trains online, in arrival order, as groups complete. IterationEnd flushes the last partial step, runs
 *    epochs 2..E over the iteration's units shuffled by the seeded RNG, saves the model as version `iteration` and
 *    reports it (PolicyPublished), then checkpoints.
 *
 * Resume: an IterationStart for the iteration that is already open (in memory, or restored from a checkpoint)
 * continues it; examples already consumed (same prompt_id and sample_index) are skipped, so a client may replay the
 * iteration from its start. Incomplete groups at IterationEnd are dropped (logged).
 */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { type PolicyVersion, PolicyVersionSchema } from "../../gen/sppo/v1/common_pb.js";
import {
  Algorithm,
  type IterationEnd,
  type IterationStart,
  OptimizerKind,
  PairSelection,
  type TrainingExample,
  type TrainingParams,
  type TrainRequest,
} from "../../gen/sppo/v1/optimizer_pb.js";
import { type TelemetryEvent, TelemetryEventSchema, type TrainStep, TrainStepSchema } from "../../gen/sppo/v1/telemetry_pb.js";
import type { OptimizerConfig } from "../../lib/config/optimizer.js";
import { Code, invalidArgument, RpcError } from "../../lib/errors.js";
import { log } from "../../lib/log.js";
import { type LossName, preferenceLoss } from "../../lib/sppo/losses.js";
import { Rng, type RngState } from "../../lib/sppo/rng.js";
import { type PairSelectionMode, selectChosenRejected } from "../../lib/sppo/selection.js";
import {
  Adam,
  type CausalLM,
  clipGradNorm,
  contextLength,
  loadModel,
  makeBatch,
  type NamedGrads,
  type Optimizer,
  optimizerFromState,
  type PolicyTokenizer,
  RMSprop,
  saveModel,
  sequenceLogProbs,
  valueAndGrads,
  warmupLinearSchedule,
} from "../../models/index.js";
import { type CheckpointEntry, CheckpointError, listCheckpoints, readCheckpoint, writeCheckpoint } from "./checkpoint.js";
import { type ManifestFile, manifestOf, removeStaleTemps, sha256Concat, writeDirAtomic } from "./files.js";

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

/** One response as the trainer keeps it. */
interface Sample {
  prompt: number[];
  response: number[];
  winRate: number;
  ref: number;
  role: "chosen" | "rejected" | "other";
}

/** One prompt's selected responses: [chosen, rejected], or all K in sample order (roles marked). */
interface Unit {
  promptId: string;
  samples: Sample[];
}

interface OpenGroup {
  groupSize: number;
  examples: { sampleIndex: number; prompt: number[]; response: number[]; winRate: number; ref: number }[];
}

/** The open iteration, JSON-safe (it goes into checkpoints as is). */
interface IterationState {
  iteration: number;
  totalPrompts: number;
  baseVersion: number;
  params: IterationParams;
  groups: Record<string, OpenGroup>;
  /** Data cursor: keys `${prompt_id}\u0000${sample_index}` of every example consumed. */
  consumed: string[];
  /** Units waiting for the next epoch-1 step. */
  pending: Unit[];
  /** Every unit of the iteration (kept only when epochs > 1, for the later epochs). */
  units: Unit[];
  promptsDone: number;
  droppedGroups: number;
  unitsPerStep: number | null;
  totalSteps: number | null;
  warmupSteps: number | null;
  /** Optimizer steps taken in this iteration. */
  iterStep: number;
}

interface VersionRecord {
  version: number;
  iteration: number;
  sha256: string;
  family: string;
  parameters: string;
  dir: string;
}

/** Everything but the weights and optimizer slots that a checkpoint must restore. */
interface TrainerSnapshot {
  step: number;
  rng: RngState;
  versions: VersionRecord[];
  iteration: IterationState | null;
  lastIteration: number;
}

/** A policy version's files, for GetWeights. */
export interface VersionFiles {
  policy: PolicyVersion;
  dir: string;
  files: ManifestFile[];
}

export interface TrainerOptions {
  /** Milliseconds, monotonic; for examples/s and tokens/s. @default performance.now */
  clock?: () => number;
}

const key = (promptId: string, sampleIndex: number) => `${promptId}\u0000${sampleIndex}`;

function mean(xs: readonly number[]): number {
  return xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length;
}

export class Trainer {
  private model: CausalLM;
  private readonly tokenizer?: PolicyTokenizer;
  private readonly clock: () => number;
  private rng: Rng;
  private step = 0;
  private versions: VersionRecord[];
  private lastIteration = 0;
  private state: IterationState | null = null;
  /** An iteration already published whose stream is being replayed (a client that lost the answer): not trained again. */
  private replayed: number | null = null;
  private consumed = new Set<string>();
  private optimizer: Optimizer | null = null;
  private schedule: ((step: number) => number) | null = null;

  private constructor(
    private readonly config: OptimizerConfig,
    model: CausalLM,
    tokenizer: PolicyTokenizer | undefined,
    versions: VersionRecord[],
    options: TrainerOptions,
  ) {
    this.model = model;
    this.tokenizer = tokenizer;
    this.versions = versions;
    this.clock = options.clock ?? (() => performance.now());
    this.rng = new Rng(config.seed);
  }

  /**
   * Opens the trainer: from the newest valid checkpoint in `config.checkpointDir` when `config.resume` (damaged ones
   * are skipped with a warning), else from the base policy in `config.modelDir` (version 0). The tfjs backend must
   * already be initialised (models/ `initBackend`).
   */
  static open(config: OptimizerConfig, options: TrainerOptions = {}): Trainer {
    removeStaleTemps(config.checkpointDir);
    removeStaleTemps(config.policyDir);
    if (config.resume) {
      for (const entry of listCheckpoints(config.checkpointDir)) {
        let loaded: ReturnType<typeof readCheckpoint<TrainerSnapshot>>;
        try {
          loaded = readCheckpoint<TrainerSnapshot>(entry.dir);
        } catch (err) {
          if (!(err instanceof CheckpointError)) throw err;
          log.warn({ checkpoint: entry.dir, err: err.message }, "skipping a damaged checkpoint");
          continue;
        }
        const { model, tokenizer } = loadModel(loaded.modelDir);
        const trainer = new Trainer(config, model, tokenizer, loaded.trainer.versions, options);
        trainer.restore(loaded.trainer, loaded.optimizer);
        log.info({ checkpoint: entry.name, iteration: trainer.currentIteration(), step: trainer.step }, "resumed from checkpoint");
        return trainer;
      }
    }
    if (!existsSync(join(config.modelDir, "config.json"))) {
      throw new RpcError(Code.FAILED_PRECONDITION, `optimizer.modelDir ${config.modelDir}: no config.json (expected an HF model directory)`);
    }
    const { model, tokenizer } = loadModel(config.modelDir);
    const base = Trainer.describeVersion(config.modelDir, 0, 0, model);
    return new Trainer(config, model, tokenizer, [base], options);
  }

  private static describeVersion(dir: string, version: number, iteration: number, model: CausalLM): VersionRecord {
    const files = manifestOf(dir);
    let parameters = 0;
    for (const p of model.params.values()) parameters += p.size;
    return {
      version,
      iteration,
      sha256: sha256Concat(files.map((f) => join(dir, f.name))),
      family: model.config.model_type,
      parameters: String(parameters),
      dir,
    };
  }

  private restore(snapshot: TrainerSnapshot, optimizerState: ReturnType<Optimizer["state"]> | undefined): void {
    this.step = snapshot.step;
    this.rng = Rng.fromState(snapshot.rng);
    this.lastIteration = snapshot.lastIteration;
    this.state = snapshot.iteration;
    this.consumed = new Set(snapshot.iteration?.consumed ?? []);
    if (this.state) {
      this.optimizer = optimizerState ? optimizerFromState(optimizerState) : this.freshOptimizer(this.state.params);
      this.makeSchedule();
    }
  }

  /** The policy being trained (read-only use: its weights change with every step). */
  get policy(): CausalLM {
    return this.model;
  }

  /** Global optimizer steps taken. */
  get steps(): number {
    return this.step;
  }

  /** The open iteration, or the last completed one. */
  currentIteration(): number {
    return this.state?.iteration ?? this.lastIteration;
  }

  /** The published versions, oldest first (version 0 is the base policy). */
  listVersions(): PolicyVersion[] {
    return this.versions.map((v) => this.versionMessage(v));
  }

  /** The published versions with their directories, oldest first (no hashing: cheap to call after every request). */
  publishedVersions(): { policy: PolicyVersion; dir: string }[] {
    return this.versions.map((v) => ({ policy: this.versionMessage(v), dir: v.dir }));
  }

  /** A version's directory and files, or NOT_FOUND. */
  versionFiles(version: number): VersionFiles {
    const record = this.versions.find((v) => v.version === version);
    if (!record) throw new RpcError(Code.NOT_FOUND, `policy version ${version} does not exist (latest is ${this.latestVersion().version})`);
    return { policy: this.versionMessage(record), dir: record.dir, files: manifestOf(record.dir) };
  }

  private versionMessage(v: VersionRecord): PolicyVersion {
    return create(PolicyVersionSchema, { version: v.version, iteration: v.iteration, sha256: v.sha256, family: v.family, parameters: BigInt(v.parameters) });
  }

  private latestVersion(): VersionRecord {
    return this.versions[this.versions.length - 1];
  }

  /** Dispatches one Train request; returns the telemetry it produced (possibly none). */
  handle(request: TrainRequest): TelemetryEvent[] {
    switch (request.kind.case) {
      case "start":
        return this.start(request.kind.value);
      case "example":
        return this.addExample(request.kind.value);
      case "end":
        return this.end(request.kind.value);
      default:
        throw invalidArgument("kind", "one of start, example, end must be set");
    }
  }

  /** Opens (or, for the open iteration, continues) an iteration. */
  start(msg: IterationStart): TelemetryEvent[] {
    this.replayed = null;
    if (!this.state && msg.iteration > 0 && msg.iteration === this.lastIteration && msg.iteration === this.latestVersion().version) {
      // The client replays an iteration this trainer already finished (it restarted from the checkpoint written at
      // that iteration's end, or the client lost the stream before PolicyPublished): acknowledge, do not train twice.
      this.replayed = msg.iteration;
      log.info({ iteration: msg.iteration }, "iteration already published: its replay is acknowledged without training");
      return [];
    }
    if (this.state && msg.iteration === this.state.iteration) {
      if (msg.totalPrompts !== this.state.totalPrompts) {
        throw new RpcError(Code.FAILED_PRECONDITION, `iteration ${msg.iteration} is open with total_prompts ${this.state.totalPrompts}, got ${msg.totalPrompts}`);
      }
      log.info({ iteration: msg.iteration, consumed: this.consumed.size, step: this.step }, "continuing the open iteration");
      return [];
    }
    if (this.state) {
      throw new RpcError(Code.FAILED_PRECONDITION, `iteration ${this.state.iteration} is still open; finish it with IterationEnd before starting ${msg.iteration}`);
    }
    const latest = this.latestVersion();
    if (msg.iteration !== latest.version + 1) {
      throw new RpcError(Code.FAILED_PRECONDITION, `start.iteration must be ${latest.version + 1} (the latest policy version is ${latest.version}), got ${msg.iteration}`);
    }
    if (msg.baseVersion !== latest.version) {
      throw new RpcError(Code.FAILED_PRECONDITION, `start.base_version ${msg.baseVersion} is not the latest policy version ${latest.version}: the samples must come from it`);
    }
    if (msg.totalPrompts < 1) throw invalidArgument("start.total_prompts", "must be ≥ 1 (it sizes the learning-rate schedule)");
    const params = resolveParams(this.config, msg.params);
    if (params.seed !== null) this.rng = new Rng(params.seed);
    this.state = {
      iteration: msg.iteration,
      totalPrompts: msg.totalPrompts,
      baseVersion: msg.baseVersion,
      params,
      groups: {},
      consumed: [],
      pending: [],
      units: [],
      promptsDone: 0,
      droppedGroups: 0,
      unitsPerStep: null,
      totalSteps: null,
      warmupSteps: null,
      iterStep: 0,
    };
    this.consumed = new Set();
    this.optimizer?.dispose();
    this.optimizer = this.freshOptimizer(params);
    this.schedule = null;
    log.info({ iteration: msg.iteration, totalPrompts: msg.totalPrompts, params }, "iteration started");
    return [];
  }

  private freshOptimizer(params: IterationParams): Optimizer {
    return params.optimizer === "adam" ? new Adam() : new RMSprop();
  }

  private openState(what: string): IterationState {
    if (!this.state) throw new RpcError(Code.FAILED_PRECONDITION, `${what} before any IterationStart`);
    return this.state;
  }

  /** Validates and buffers one example; trains whenever enough complete groups are waiting. */
  addExample(ex: TrainingExample): TelemetryEvent[] {
    if (this.replayed !== null && ex.iteration === this.replayed) return [];
    const st = this.openState("TrainingExample");
    if (ex.iteration !== st.iteration) {
      throw new RpcError(Code.FAILED_PRECONDITION, `example.iteration ${ex.iteration} does not match the open iteration ${st.iteration}`);
    }
    if (ex.promptId === "") throw invalidArgument("example.prompt_id", "must not be empty");
    const k = key(ex.promptId, ex.sampleIndex);
    if (this.consumed.has(k)) return []; // replayed after a resume
    const minGroup = st.params.pairSelection === "chosen_rejected" ? 2 : 1;
    if (ex.groupSize < minGroup) throw invalidArgument("example.group_size", `must be ≥ ${minGroup}, got ${ex.groupSize}`);
    if (ex.sampleIndex >= ex.groupSize) throw invalidArgument("example.sample_index", `${ex.sampleIndex} is not below group_size ${ex.groupSize}`);
    if (ex.promptTokenIds.length === 0) throw invalidArgument("example.prompt_token_ids", "must not be empty (prepend BOS)");
    if (ex.responseTokenIds.length === 0) throw invalidArgument("example.response_token_ids", "must not be empty");
    const vocab = this.model.config.vocab_size;
    for (const [name, ids] of [
      ["prompt_token_ids", ex.promptTokenIds],
      ["response_token_ids", ex.responseTokenIds],
    ] as const) {
      const bad = ids.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
      if (bad >= 0) throw invalidArgument(`example.${name}[${bad}]`, `token id ${ids[bad]} is outside the vocabulary [0, ${vocab})`);
    }
    const length = ex.promptTokenIds.length + ex.responseTokenIds.length;
    if (length > contextLength(this.model.config)) {
      throw invalidArgument("example", `prompt + response is ${length} tokens, longer than the policy's context ${contextLength(this.model.config)}`);
    }
    if (!(ex.winRate >= 0 && ex.winRate <= 1)) throw invalidArgument("example.win_rate", `must be in [0, 1], got ${ex.winRate}`);
    // A summed log-prob is ≤ 0; allow float noise from another engine.
    if (!(Number.isFinite(ex.referenceLogprob) && ex.referenceLogprob <= 1e-3)) {
      throw invalidArgument("example.reference_logprob", `must be a finite log-probability ≤ 0, got ${ex.referenceLogprob}`);
    }
    let group = st.groups[ex.promptId];
    if (!group) group = st.groups[ex.promptId] = { groupSize: ex.groupSize, examples: [] };
    if (group.groupSize !== ex.groupSize) {
      throw invalidArgument("example.group_size", `prompt ${ex.promptId} had group_size ${group.groupSize}, now ${ex.groupSize}`);
    }
    group.examples.push({
      sampleIndex: ex.sampleIndex,
      prompt: [...ex.promptTokenIds],
      response: [...ex.responseTokenIds],
      winRate: ex.winRate,
      ref: ex.referenceLogprob,
    });
    this.consumed.add(k);
    if (group.examples.length < group.groupSize) return [];
    delete st.groups[ex.promptId];
    const unit = this.makeUnit(ex.promptId, group, st.params.pairSelection);
    st.promptsDone++;
    st.pending.push(unit);
    if (st.params.epochs > 1) st.units.push(unit);
    if (st.unitsPerStep === null) {
      st.unitsPerStep = Math.max(1, Math.ceil(st.params.batchSize / unit.samples.length));
      st.totalSteps = st.params.epochs * Math.ceil(st.totalPrompts / st.unitsPerStep);
      st.warmupSteps = Math.ceil(st.params.warmupRatio * st.totalSteps);
      this.makeSchedule();
      if (st.warmupSteps >= 1 && st.totalSteps === 1) {
        // HF semantics: step 0 of a warm-up has learning rate 0, so a one-step iteration would not train at all.
        log.warn({ iteration: st.iteration, totalPrompts: st.totalPrompts, unitsPerStep: st.unitsPerStep }, "the iteration has one optimizer step and it is a warm-up step (lr 0): lower batchSize or warmupRatio");
      }
    }
    const events: TelemetryEvent[] = [];
    while (st.pending.length >= st.unitsPerStep) events.push(...this.trainStep(st.pending.splice(0, st.unitsPerStep), 1));
    return events;
  }

  private makeSchedule(): void {
    const st = this.state;
    if (!st || st.totalSteps === null || st.warmupSteps === null) return;
    this.schedule = warmupLinearSchedule(st.params.learningRate, st.warmupSteps, st.totalSteps);
  }

  private makeUnit(promptId: string, group: OpenGroup, mode: PairSelectionMode): Unit {
    const sorted = [...group.examples].sort((a, b) => a.sampleIndex - b.sampleIndex);
    const { chosen, rejected } = sorted.length >= 2 ? selectChosenRejected(sorted.map((e) => e.winRate)) : { chosen: 0, rejected: -1 };
    const toSample = (e: OpenGroup["examples"][number], i: number): Sample => ({
      prompt: e.prompt,
      response: e.response,
      winRate: e.winRate,
      ref: e.ref,
      role: i === chosen ? "chosen" : i === rejected ? "rejected" : "other",
    });
    if (mode === "all") return { promptId, samples: sorted.map(toSample) };
    return { promptId, samples: [toSample(sorted[chosen], chosen), toSample(sorted[rejected], rejected)] };
  }

  /**
   * One optimizer step over `units`. Pairwise layout per micro-batch: every unit's chosen response first, then the
   * rejected ones in the same order (what `preferenceLoss` splits); with all-K selection the samples in order.
   */
  private trainStep(units: Unit[], epoch: number): TelemetryEvent[] {
    const st = this.state!;
    const { params } = st;
    const t0 = this.clock();
    const total = units.reduce((acc, u) => acc + u.samples.length, 0);
    const parts = Math.min(params.gradientAccumulation, units.length);
    const micro: Unit[][] = [];
    for (let i = 0, start = 0; i < parts; i++) {
      const size = Math.floor(units.length / parts) + (i < units.length % parts ? 1 : 0);
      micro.push(units.slice(start, start + size));
      start += size;
    }
    const padId = this.model.config.pad_token_id ?? this.model.config.eos_token_id ?? 0;
    let accumulated: NamedGrads | null = null;
    let loss = 0;
    let tokens = 0;
    const seen: { sample: Sample; logprob: number }[] = [];
    for (const mb of micro) {
      const samples = params.pairSelection === "all" ? mb.flatMap((u) => u.samples) : [...mb.map((u) => u.samples[0]), ...mb.map((u) => u.samples[1])];
      const batch = makeBatch(samples.map((s) => ({ prompt: s.prompt, response: s.response })), padId);
      const ref = tf.tensor1d(samples.map((s) => s.ref));
      const winRate = tf.tensor1d(samples.map((s) => s.winRate));
      const weight = samples.length / total;
      let logprobs: tf.Tensor1D | null = null;
      try {
        const { value, grads } = valueAndGrads(this.model, () => {
          const lp = sequenceLogProbs(this.model, batch); // (N) summed over response tokens
          logprobs = tf.keep(lp);
          return tf.mul(preferenceLoss(params.algorithm, tf.sub(lp, ref) as tf.Tensor1D, winRate, params.eta), weight) as tf.Scalar;
        });
        loss += value.dataSync()[0];
        value.dispose();
        if (accumulated === null) accumulated = grads;
        else {
          const acc: NamedGrads = accumulated;
          for (const [name, g] of Object.entries(grads)) {
            const prev = acc[name];
            acc[name] = prev ? tf.add(prev, g) : g.clone();
            prev?.dispose();
            g.dispose();
          }
        }
        const lpValues = (logprobs as tf.Tensor1D | null)?.dataSync() ?? new Float32Array(samples.length);
        for (let i = 0; i < samples.length; i++) seen.push({ sample: samples[i], logprob: lpValues[i] });
      } finally {
        (logprobs as tf.Tensor1D | null)?.dispose();
        batch.dispose();
        ref.dispose();
        winRate.dispose();
      }
      tokens += samples.reduce((acc, s) => acc + s.prompt.length + s.response.length, 0);
    }
    const grads = accumulated ?? {};
    const { grads: clipped, norm } = clipGradNorm(grads, params.maxGradNorm);
    const lr = this.schedule ? this.schedule(st.iterStep) : 0;
    this.optimizer!.apply(this.model.params, clipped, lr);
    tf.dispose([...Object.values(grads), ...Object.values(clipped)]);
    st.iterStep++;
    this.step++;
    const seconds = Math.max(1e-9, (this.clock() - t0) / 1000);
    const chosen = seen.filter((s) => s.sample.role === "chosen");
    const rejected = seen.filter((s) => s.sample.role === "rejected");
    const trainStep: TrainStep = create(TrainStepSchema, {
      step: BigInt(this.step),
      epoch,
      loss,
      chosenDelta: mean(chosen.map((s) => s.logprob - s.sample.ref)),
      rejectedDelta: mean(rejected.map((s) => s.logprob - s.sample.ref)),
      chosenLogprob: mean(chosen.map((s) => s.logprob)),
      rejectedLogprob: mean(rejected.map((s) => s.logprob)),
      target: mean(seen.map((s) => params.eta * (s.sample.winRate - 0.5))),
      gradNorm: norm,
      learningRate: lr,
      examplesPerSecond: total / seconds,
      tokensPerSecond: tokens / seconds,
      examples: total,
    });
    const events = [this.event({ case: "trainStep", value: trainStep })];
    if (this.config.checkpointEverySteps > 0 && this.step % this.config.checkpointEverySteps === 0) this.saveCheckpoint();
    return events;
  }

  private event(payload: TelemetryEvent["payload"]): TelemetryEvent {
    return create(TelemetryEventSchema, {
      time: timestampFromDate(new Date()),
      runId: this.config.runId,
      source: "optimizer",
      iteration: this.currentIteration(),
      payload,
    });
  }

  /** Finishes the iteration: last partial step, later epochs, then publishes the new version and checkpoints. */
  end(msg: IterationEnd): TelemetryEvent[] {
    if (this.replayed !== null && msg.iteration === this.replayed) {
      this.replayed = null;
      return [this.event({ case: "policyPublished", value: this.versionMessage(this.latestVersion()) })];
    }
    const st = this.openState("IterationEnd");
    if (msg.iteration !== st.iteration) {
      throw new RpcError(Code.FAILED_PRECONDITION, `end.iteration ${msg.iteration} does not match the open iteration ${st.iteration}`);
    }
    const events: TelemetryEvent[] = [];
    const incomplete = Object.entries(st.groups);
    if (incomplete.length > 0) {
      st.droppedGroups += incomplete.length;
      log.warn(
        { iteration: st.iteration, dropped: incomplete.length, example: incomplete[0][0], have: incomplete[0][1].examples.length, of: incomplete[0][1].groupSize },
        "dropping prompts whose groups never completed",
      );
      st.groups = {};
    }
    if (st.pending.length > 0) events.push(...this.trainStep(st.pending.splice(0), 1));
    if (st.unitsPerStep !== null) {
      for (let epoch = 2; epoch <= st.params.epochs; epoch++) {
        const order = this.rng.shuffle([...st.units]);
        for (let i = 0; i < order.length; i += st.unitsPerStep) events.push(...this.trainStep(order.slice(i, i + st.unitsPerStep), epoch));
      }
    }
    if (st.promptsDone === 0) log.warn({ iteration: st.iteration }, "iteration ended without a complete prompt: the new version equals the base");
    const record = this.publish(st.iteration);
    this.lastIteration = st.iteration;
    this.state = null;
    this.consumed = new Set();
    this.optimizer?.dispose();
    this.optimizer = null;
    this.schedule = null;
    events.push(this.event({ case: "policyPublished", value: this.versionMessage(record) }));
    this.saveCheckpoint();
    return events;
  }

  private publish(iteration: number): VersionRecord {
    const dir = join(this.config.policyDir, `v${iteration}`);
    writeDirAtomic(dir, (tmp) => saveModel(tmp, this.model, this.tokenizer));
    const record = Trainer.describeVersion(dir, iteration, iteration, this.model);
    this.versions = [...this.versions.filter((v) => v.version !== iteration), record];
    log.info({ version: record.version, sha256: record.sha256, dir }, "policy version published");
    return record;
  }

  /** Writes a checkpoint now (atomically) and prunes old ones beyond `keepCheckpoints`. */
  saveCheckpoint(): CheckpointEntry & { policy: PolicyVersion } {
    const snapshot: TrainerSnapshot = {
      step: this.step,
      rng: this.rng.getState(),
      versions: this.versions,
      iteration: this.state ? { ...this.state, consumed: [...this.consumed] } : null,
      lastIteration: this.lastIteration,
    };
    const entry = writeCheckpoint(this.config.checkpointDir, this.currentIteration(), this.step, {
      model: this.model,
      tokenizer: this.tokenizer,
      optimizer: this.state && this.optimizer ? this.optimizer.state() : undefined,
      trainer: snapshot,
    });
    for (const old of listCheckpoints(this.config.checkpointDir).slice(this.config.keepCheckpoints)) rmSync(old.dir, { recursive: true, force: true });
    log.info({ checkpoint: entry.name, sha256: entry.sha256 }, "checkpoint written");
    return { ...entry, policy: this.versionMessage(this.latestVersion()) };
  }

  /** Checkpoints on disk, newest first, each with the latest policy version it recorded. */
  listCheckpoints(): CheckpointEntry[] {
    return listCheckpoints(this.config.checkpointDir);
  }

  /** Frees the model and optimizer state. */
  dispose(): void {
    this.optimizer?.dispose();
    this.optimizer = null;
    this.model.dispose();
  }
}
