/**
 * The optimizer's core, testable without gRPC: a small coordinator over the Train stream's IterationStart /
 * TrainingExample / IterationEnd messages. Its parts:
 *  - params.ts: the iteration's hyper-parameters (config ← IterationStart overrides) and its fresh optimizer;
 *  - grouping.ts: examples → complete prompt groups → units ([chosen, rejected] or all K);
 *  - models/ `TrainStep`: the pure step (loss, log-probs, micro-batched gradients, clipping, update), `tfjsStep`
 *    unless another engine is given;
 *  - versions.ts and checkpoint.ts: publishing versions, writing and reading checkpoints;
 *  - step-telemetry.ts: a step's TrainStep event; state.ts: what checkpoints keep of the trainer.
 * What stays here: which units make a step, the learning-rate schedule, the data cursor, the iteration's life.
 *
 * One iteration (DESIGN §2 step 5, as the official code runs it):
 *  - IterationStart fixes the hyper-parameters, a fresh optimizer (the official code starts each iteration as a new
 *    training run from π_t) and the schedule: warm-up over ceil(warmupRatio · S) steps, then linear decay to 0 at
 *    S = epochs · ceil(total_prompts / prompts per step).
 *  - A step takes ceil(batchSize / unit size) units, split into `gradientAccumulation` micro-batches.
 *  - Epoch 1 trains online, in arrival order, as groups complete. IterationEnd flushes the last partial step, runs
 *    epochs 2..E over the iteration's units shuffled by the seeded RNG, saves the model as version `iteration` and
 *    reports it (PolicyPublished), then checkpoints.
 *
 * Resume: an IterationStart for the iteration that is already open (in memory, or restored from a checkpoint)
 * continues it; examples already consumed (same prompt_id and sample_index) are skipped, so a client may replay the
 * iteration from its start. Incomplete groups at IterationEnd are dropped (logged).
 *
 * Runs (runs.ts): the trainer holds one run at a time; an IterationStart of another run switches it (`switchRun`).
 *
 * Engines (stepping.ts): `handle`/`start`/`addExample`/`end` run a synchronous engine's steps in the call;
 * `handleAsync` runs any engine (the service uses it).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { PolicyVersion } from "../../gen/sppo/v1/common_pb.js";
import type { IterationEnd, IterationStart, TrainingExample, TrainRequest } from "../../gen/sppo/v1/optimizer_pb.js";
import { type TelemetryEvent, TelemetryEventSchema } from "../../gen/sppo/v1/telemetry_pb.js";
import { removeStaleTemps } from "../../lib/atomic.js";
import type { OptimizerConfig } from "../../lib/config/optimizer.js";
import { Code, invalidArgument, RpcError } from "../../lib/errors.js";
import { log } from "../../lib/log.js";
import { Rng } from "../../lib/rng.js";
import { directoryManifestSync } from "../../lib/weights/manifest.js";
import {
  type CausalLM,
  contextLength,
  loadModel,
  type Optimizer,
  type OptimizerState,
  type PolicyTokenizer,
  type StepSettings,
  type TrainStep,
  tfjsStep,
  warmupLinearSchedule,
} from "../../models/index.js";
import { type CheckpointEntry, type LoadedCheckpoint, listCheckpoints, newestValidCheckpoint, pruneCheckpoints, writeCheckpoint } from "./checkpoint.js";
import { checkExample, exampleKey, groupExample, type Unit } from "./grouping.js";
import { trainStepTelemetry } from "./step-telemetry.js";
import { iterationOptimizer, resolveParams } from "./params.js";
import { ANONYMOUS_RUN, describeRun, otherBaseError, type RunKey, readCurrentRun, runDirs, runOf, sameRun, writeCurrentRun } from "./runs.js";
import { type IterationState, newIteration, type TrainerSnapshot } from "./state.js";
import { runSteps, runStepsAsync, type StepJob, type Stepping } from "./stepping.js";
import { describeVersion, PolicyVersions, type VersionFiles, versionMessage } from "./versions.js";

export interface TrainerOptions {
  /** Milliseconds, monotonic; for examples/s and tokens/s. @default performance.now */
  clock?: () => number;
  /** The training engine. @default tfjsStep (models/train-step.ts) */
  engine?: TrainStep;
}

export class Trainer {
  private readonly clock: () => number;
  private readonly engine: TrainStep;
  // The run being trained and its state (all replaced when another run comes: `switchRun`).
  private run: RunKey = ANONYMOUS_RUN;
  private dirs: { checkpointDir: string; policyDir: string };
  private model!: CausalLM;
  private tokenizer?: PolicyTokenizer;
  private rng!: Rng;
  private step = 0;
  private versions!: PolicyVersions;
  private lastIteration = 0;
  private state: IterationState | null = null;
  /** An iteration already published whose stream is being replayed (a client that lost the answer): not trained again. */
  private replayed: number | null = null;
  private consumed = new Set<string>();
  private optimizer: Optimizer | null = null;
  private schedule: ((step: number) => number) | null = null;

  private constructor(
    private readonly config: OptimizerConfig,
    /** optimizer.modelDir's hash: the base every run this optimizer trains must share. */
    private readonly baseSha256: string,
    options: TrainerOptions,
  ) {
    this.clock = options.clock ?? (() => performance.now());
    this.engine = options.engine ?? tfjsStep;
    this.dirs = runDirs(config, "");
  }

  /**
   * Opens the trainer: when `config.resume`, from the newest valid checkpoint of the run it last worked for (runs.ts;
   * damaged ones are skipped with a warning, one on another base model than `config.modelDir` is refused or skipped
   * per `config.baseMismatch`), else from the base policy in `config.modelDir` (version 0) as the anonymous run. The
   * tfjs backend must already be initialised (models/ `initBackend`).
   */
  static open(config: OptimizerConfig, options: TrainerOptions = {}): Trainer {
    if (!existsSync(join(config.modelDir, "config.json"))) {
      throw new RpcError(Code.FAILED_PRECONDITION, `optimizer.modelDir ${config.modelDir}: no config.json (expected an HF model directory)`);
    }
    removeStaleTemps(config.checkpointDir);
    removeStaleTemps(config.policyDir);
    const trainer = new Trainer(config, directoryManifestSync(config.modelDir).sha256, options);
    const runId = config.resume ? readCurrentRun(config.checkpointDir) : "";
    const found = config.resume ? trainer.findCheckpoint(runId) : undefined;
    if (found) {
      trainer.adopt(found.trainer.run ?? ANONYMOUS_RUN, found);
      log.info({ checkpoint: found.entry.name, run: runId, iteration: trainer.currentIteration(), step: trainer.step }, "resumed from checkpoint");
    } else trainer.adopt(ANONYMOUS_RUN);
    return trainer;
  }

  /** The newest usable checkpoint of run `runId` (see `open` for what is skipped or refused). */
  private findCheckpoint(runId: string): LoadedCheckpoint<TrainerSnapshot> | undefined {
    const dirs = runDirs(this.config, runId);
    removeStaleTemps(dirs.checkpointDir);
    removeStaleTemps(dirs.policyDir);
    return newestValidCheckpoint<TrainerSnapshot>(dirs.checkpointDir, (loaded) => {
      const base = loaded.trainer.versions[0];
      if (base?.sha256 === this.baseSha256) return true;
      const theirs = { sha256: base?.sha256 ?? "unknown", family: base?.family, parameters: base?.parameters };
      if (this.config.baseMismatch === "refuse") {
        throw otherBaseError(
          `optimizer.checkpointDir: checkpoint ${loaded.entry.dir}`,
          theirs,
          this.config.modelDir,
          { sha256: this.baseSha256 },
          "point optimizer.modelDir at that model, give this optimizer another checkpointDir, or set optimizer.baseMismatch: fresh to leave it unused and start from optimizer.modelDir",
        );
      }
      log.warn({ checkpoint: loaded.entry.dir, base: theirs.sha256, modelDir: this.config.modelDir }, "a checkpoint on another base model is left unused (optimizer.baseMismatch: fresh)");
      return false;
    });
  }

  /** Takes `run` as the run being trained: from its checkpoint `from`, or fresh from the base policy. */
  private adopt(run: RunKey, from?: LoadedCheckpoint<TrainerSnapshot>): void {
    const { model, tokenizer } = loadModel(from ? from.modelDir : this.config.modelDir);
    this.run = run;
    this.dirs = runDirs(this.config, run.runId);
    this.model = model;
    this.tokenizer = tokenizer;
    this.versions = new PolicyVersions(this.dirs.policyDir, from ? from.trainer.versions : [describeVersion(this.config.modelDir, 0, 0, model, this.baseSha256)]);
    this.rng = new Rng(this.config.seed);
    this.step = 0;
    this.lastIteration = 0;
    this.state = null;
    this.replayed = null;
    this.consumed = new Set();
    this.optimizer = null;
    this.schedule = null;
    if (from) this.restore(from.trainer, from.optimizer);
  }

  /**
   * Moves to another run than the current one: to the newest checkpoint of its own (a run that comes back), else to
   * the base policy (a new run). The run left keeps its open iteration in a checkpoint. A run id whose checkpoints
   * record another fingerprint is FAILED_PRECONDITION (continuing it would mix two configurations).
   */
  private switchRun(next: RunKey): void {
    const found = next.runId === "" && !this.config.resume ? undefined : this.findCheckpoint(next.runId);
    const recorded = found ? (found.trainer.run ?? ANONYMOUS_RUN) : next;
    if (!sameRun(recorded, next)) {
      throw new RpcError(
        Code.FAILED_PRECONDITION,
        `start.run: ${describeRun(next)} was started with other settings (fingerprint ${recorded.fingerprint.slice(0, 12)}… in its checkpoints, ${next.fingerprint.slice(0, 12)}… now): continuing it would mix two configurations; start a new run instead`,
      );
    }
    const left = this.run;
    if (this.state) this.saveCheckpoint(); // the run left can come back for its open iteration
    this.optimizer?.dispose();
    this.model.dispose();
    this.adopt(next, found);
    writeCurrentRun(this.config.checkpointDir, next.runId);
    log.info(
      { from: left.runId, run: next.runId, resumed: found?.entry.name ?? null, iteration: this.currentIteration(), step: this.step },
      found ? `${describeRun(next)} comes back: continuing from its checkpoint` : `${describeRun(next)} is new: training it from the base policy`,
    );
  }

  private restore(snapshot: TrainerSnapshot, optimizerState: OptimizerState | undefined): void {
    this.step = snapshot.step;
    this.rng = Rng.fromState(snapshot.rng);
    this.lastIteration = snapshot.lastIteration;
    this.state = snapshot.iteration;
    this.consumed = new Set(snapshot.iteration?.consumed ?? []);
    if (this.state) {
      this.optimizer = iterationOptimizer(this.engine, this.state.params.optimizer, optimizerState);
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
    return this.versions.messages();
  }

  /** The published versions with their directories, oldest first (no hashing: cheap to call after every request). */
  publishedVersions(): { policy: PolicyVersion; dir: string }[] {
    return this.versions.records.map((v) => ({ policy: versionMessage(v), dir: v.dir }));
  }

  /** A version's directory and files, or NOT_FOUND. */
  versionFiles(version: number): VersionFiles {
    return this.versions.files(version);
  }

  /** Dispatches one Train request with a synchronous engine; returns the telemetry it produced (possibly none). */
  handle(request: TrainRequest): TelemetryEvent[] {
    return this.runSync(this.dispatch(request));
  }

  /** `handle` for any engine: resolves once the request's steps are done. Calls must not overlap. */
  handleAsync(request: TrainRequest): Promise<TelemetryEvent[]> {
    return this.runAsync(this.dispatch(request));
  }

  /** Opens (or, for the open iteration, continues) an iteration. */
  start(msg: IterationStart): TelemetryEvent[] {
    return this.runSync(this.starting(msg));
  }

  /** Validates and buffers one example; trains whenever enough complete groups are waiting. */
  addExample(ex: TrainingExample): TelemetryEvent[] {
    return this.runSync(this.adding(ex));
  }

  /** Finishes the iteration: last partial step, later epochs, then publishes the new version and checkpoints. */
  end(msg: IterationEnd): TelemetryEvent[] {
    return this.runSync(this.ending(msg));
  }

  private readonly runStep = (job: StepJob) => this.engine.step(this.model, this.optimizer!, job.units.map((u) => u.samples), job.settings);

  private runSync<T>(logic: Stepping<T>): T {
    return runSteps(logic, this.engine, this.runStep);
  }

  private runAsync<T>(logic: Stepping<T>): Promise<T> {
    return runStepsAsync(logic, this.runStep);
  }

  private *dispatch(request: TrainRequest): Stepping<TelemetryEvent[]> {
    switch (request.kind.case) {
      case "start":
        return yield* this.starting(request.kind.value);
      case "example":
        return yield* this.adding(request.kind.value);
      case "end":
        return yield* this.ending(request.kind.value);
      default:
        throw invalidArgument("kind", "one of start, example, end must be set");
    }
  }

  // biome-ignore lint/correctness/useYield: opening an iteration takes no step, but it is dispatched like the others
  private *starting(msg: IterationStart): Stepping<TelemetryEvent[]> {
    const run = runOf(msg);
    if (run.baseSha256 !== "" && run.baseSha256 !== this.baseSha256) {
      const base = this.versions.records[0];
      throw otherBaseError(
        `start.run: ${describeRun(run)} (its base policy, version 0 of its generator)`,
        { sha256: run.baseSha256 },
        this.config.modelDir,
        { sha256: this.baseSha256, family: base.family, parameters: base.parameters },
        "give the optimizer and the generator the same base model (optimizer.modelDir, generator.modelDir), or serve runs on that model from another optimizer",
      );
    }
    if (!sameRun(run, this.run)) this.switchRun(run);
    this.replayed = null;
    const latest = this.versions.latest();
    if (!this.state && msg.iteration > 0 && msg.iteration === this.lastIteration && msg.iteration === latest.version) {
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
    if (msg.iteration !== latest.version + 1) {
      throw new RpcError(Code.FAILED_PRECONDITION, `start.iteration must be ${latest.version + 1} (the latest policy version is ${latest.version}), got ${msg.iteration}`);
    }
    if (msg.baseVersion !== latest.version) {
      throw new RpcError(Code.FAILED_PRECONDITION, `start.base_version ${msg.baseVersion} is not the latest policy version ${latest.version}: the samples must come from it`);
    }
    if (msg.totalPrompts < 1) throw invalidArgument("start.total_prompts", "must be ≥ 1 (it sizes the learning-rate schedule)");
    const params = resolveParams(this.config, msg.params);
    if (params.seed !== null) this.rng = new Rng(params.seed);
    this.state = newIteration(msg.iteration, msg.totalPrompts, msg.baseVersion, params);
    this.consumed = new Set();
    this.optimizer?.dispose();
    this.optimizer = iterationOptimizer(this.engine, params.optimizer);
    this.schedule = null;
    log.info({ iteration: msg.iteration, totalPrompts: msg.totalPrompts, params }, "iteration started");
    return [];
  }

  private openState(what: string): IterationState {
    if (!this.state) throw new RpcError(Code.FAILED_PRECONDITION, `${what} before any IterationStart`);
    return this.state;
  }

  private *adding(ex: TrainingExample): Stepping<TelemetryEvent[]> {
    if (this.replayed !== null && ex.iteration === this.replayed) return [];
    const st = this.openState("TrainingExample");
    if (ex.iteration !== st.iteration) {
      throw new RpcError(Code.FAILED_PRECONDITION, `example.iteration ${ex.iteration} does not match the open iteration ${st.iteration}`);
    }
    const key = exampleKey(ex.promptId, ex.sampleIndex);
    if (this.consumed.has(key)) return []; // replayed after a resume
    checkExample(ex, { vocabSize: this.model.config.vocab_size, contextLength: contextLength(this.model.config), selection: st.params.pairSelection });
    const unit = groupExample(st.groups, ex, st.params.pairSelection);
    this.consumed.add(key);
    if (!unit) return [];
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
    while (st.pending.length >= st.unitsPerStep) events.push(...(yield* this.trainStep(st.pending.splice(0, st.unitsPerStep), 1)));
    return events;
  }

  private makeSchedule(): void {
    const st = this.state;
    if (!st || st.totalSteps === null || st.warmupSteps === null) return;
    this.schedule = warmupLinearSchedule(st.params.learningRate, st.warmupSteps, st.totalSteps);
  }

  /** One optimizer step over `units` (through the engine), then its telemetry and, when due, a checkpoint. */
  private *trainStep(units: Unit[], epoch: number): Stepping<TelemetryEvent[]> {
    const st = this.state!;
    const { params } = st;
    const t0 = this.clock();
    const lr = this.schedule ? this.schedule(st.iterStep) : 0;
    const settings: StepSettings = {
      loss: params.algorithm,
      eta: params.eta,
      selection: params.pairSelection,
      microBatches: params.gradientAccumulation,
      maxGradNorm: params.maxGradNorm,
      learningRate: lr,
    };
    const result = yield { units, settings };
    st.iterStep++;
    this.step++;
    const seconds = Math.max(1e-9, (this.clock() - t0) / 1000);
    const events = [this.event({ case: "trainStep", value: trainStepTelemetry({ step: this.step, epoch, units, settings, result, seconds }) })];
    if (this.config.checkpointEverySteps > 0 && this.step % this.config.checkpointEverySteps === 0) this.saveCheckpoint();
    return events;
  }

  private event(payload: TelemetryEvent["payload"]): TelemetryEvent {
    return create(TelemetryEventSchema, {
      time: timestampFromDate(new Date()),
      runId: this.config.runId || this.run.runId,
      source: "optimizer",
      iteration: this.currentIteration(),
      payload,
    });
  }

  private *ending(msg: IterationEnd): Stepping<TelemetryEvent[]> {
    if (this.replayed !== null && msg.iteration === this.replayed) {
      this.replayed = null;
      return [this.event({ case: "policyPublished", value: versionMessage(this.versions.latest()) })];
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
    if (st.pending.length > 0) events.push(...(yield* this.trainStep(st.pending.splice(0), 1)));
    if (st.unitsPerStep !== null) {
      for (let epoch = 2; epoch <= st.params.epochs; epoch++) {
        const order = this.rng.shuffle([...st.units]);
        for (let i = 0; i < order.length; i += st.unitsPerStep) events.push(...(yield* this.trainStep(order.slice(i, i + st.unitsPerStep), epoch)));
      }
    }
    if (st.promptsDone === 0) log.warn({ iteration: st.iteration }, "iteration ended without a complete prompt: the new version equals the base");
    const record = this.versions.publish(st.iteration, this.model, this.tokenizer, this.run);
    this.lastIteration = st.iteration;
    this.state = null;
    this.consumed = new Set();
    this.optimizer?.dispose();
    this.optimizer = null;
    this.schedule = null;
    events.push(this.event({ case: "policyPublished", value: versionMessage(record) }));
    this.saveCheckpoint();
    return events;
  }

  /** Writes a checkpoint now (atomically) and prunes old ones beyond `keepCheckpoints`. */
  saveCheckpoint(): CheckpointEntry & { policy: PolicyVersion; runId: string } {
    const snapshot: TrainerSnapshot = {
      step: this.step,
      rng: this.rng.getState(),
      versions: this.versions.records,
      iteration: this.state ? { ...this.state, consumed: [...this.consumed] } : null,
      lastIteration: this.lastIteration,
      ...(this.run.runId !== "" ? { run: this.run } : {}),
    };
    const entry = writeCheckpoint(this.dirs.checkpointDir, this.currentIteration(), this.step, {
      model: this.model,
      tokenizer: this.tokenizer,
      optimizer: this.state && this.optimizer ? this.optimizer.state() : undefined,
      trainer: snapshot,
    });
    pruneCheckpoints(this.dirs.checkpointDir, this.config.keepCheckpoints);
    log.info({ checkpoint: entry.name, run: this.run.runId, sha256: entry.sha256 }, "checkpoint written");
    return { ...entry, policy: versionMessage(this.versions.latest()), runId: this.run.runId };
  }

  /** The current run's checkpoints on disk, newest first. */
  listCheckpoints(): CheckpointEntry[] {
    return listCheckpoints(this.dirs.checkpointDir);
  }

  /** Where the current run's checkpoints are (runs.ts). */
  get checkpointDir(): string {
    return this.dirs.checkpointDir;
  }

  /** The run being trained ("" for the anonymous run). */
  get runId(): string {
    return this.run.runId;
  }

  /** Frees the model and optimizer state (the engine is its owner's to close). */
  dispose(): void {
    this.optimizer?.dispose();
    this.optimizer = null;
    this.model.dispose();
  }
}
