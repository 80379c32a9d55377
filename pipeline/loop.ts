/**
 * The self-play loop, top to bottom. For each iteration t = 1..T on its own prompt split, with π_{t-1} the policy
 * both the generator samples from and the optimizer starts from:
 *
 *   prompts ─▶ generateCandidates (K samples each, pinned to version t-1)
 *           ─▶ compareCandidates  (K×K preference matrix from the oracle)
 *           ─▶ estimateWinRates   (P̂ and reference log-probs log π_{t-1}(y|x); rescoreReferences optionally)
 *           ─▶ trainPolicy        (streamed into the optimizer; it publishes version t)
 *   then: generator.LoadPolicy(t) pulled from the optimizer ─▶ evaluate vs base and previous ─▶ next iteration.
 *
 * Stages overlap (pipeline.schedule "overlapped"; "sequential" puts a barrier after each stage instead): the oracle sees the first candidates while later prompts are still sampled, and the optimizer
 * steps as soon as its first batch is full. A semaphore bounds the prompts in flight between generation and the
 * optimizer's queue, so memory does not grow with the prompt count. All of an iteration's samples come from one
 * version (requests pin it), and the next version is loaded only after training has consumed the whole split.
 *
 * Stopping (`stop` aborted, on SIGINT/SIGTERM): no new prompt is taken; the prompts in flight finish and are
 * journaled and sent to the optimizer, which is asked for a checkpoint; the iteration stays open (no IterationEnd),
 * and `sppo run --resume` continues it. Stopped during evaluation, the evaluation is abandoned (it runs again).
 */
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { defer, from, identity, lastValueFrom, type MonoTypeOperatorFunction, map, mergeMap, takeUntil, tap, toArray } from "rxjs";
import { type GenerateRequest, GenerateRequestSchema, type GenerateResponse, type Generator, type ScoreRequest, ScoreRequestSchema, type ScoreResponse } from "../gen/sppo/v1/generator_pb.js";
import type { PolicyVersion } from "../gen/sppo/v1/common_pb.js";
import { type Algorithm, IterationStartSchema, type Optimizer, type RunIdentity, type TrainingParamsSchema } from "../gen/sppo/v1/optimizer_pb.js";
import { type CompareRequest, CompareRequestSchema, type CompareResponse, type PreferenceOracle } from "../gen/sppo/v1/oracle_pb.js";
import { type JudgedSetSchema, RunState, Stage } from "../gen/sppo/v1/telemetry_pb.js";
import type { PipelineConfig } from "../lib/config/pipeline.js";
import type { Client } from "../lib/grpc/client.js";
import { Code, RpcError } from "../lib/errors.js";
import { isRetryable } from "../lib/grpc/codes.js";
import { createMultiplexer } from "../lib/grpc/multiplexer.js";
import { log } from "../lib/log.js";
import { Semaphore } from "../lib/streams/semaphore.js";
import { whenAborted } from "../lib/when-aborted.js";
import { compareCandidates } from "./compare-candidates.js";
import { estimateWinRates } from "./estimate-win-rates.js";
import { evaluate } from "./evaluate.js";
import { generateCandidates } from "./generate-candidates.js";
import { fileJournal, journalPath, type Journal, memoryJournal } from "./journal.js";
import type { PromptSplits } from "./prompts.js";
import type { TelemetryHub } from "./telemetry.js";
import { rescoreReferences } from "./rescore-references.js";
import { trainPolicy } from "./train-policy.js";
import type { CandidateSet, ScoredSet } from "./types.js";

export interface LoopClients {
  generator: Client<typeof Generator>;
  oracle: Client<typeof PreferenceOracle>;
  optimizer: Client<typeof Optimizer>;
  /** The optimizer's address as the generator should dial it to pull weights. */
  optimizerTarget: string;
}

export interface IterationResult {
  iteration: number;
  /** Prompts trained on (the split less the dropped ones). */
  prompts: number;
  /** Prompts of the split dropped after a per-item refusal (logged). */
  skippedPrompts: number;
  /** Prompts scored before a stop and taken from the journal by `--resume` (absent when 0). */
  resumedPrompts?: number;
  policyVersion: number;
  policySha256: string;
  win_rate_vs_base: number;
  win_rate_vs_previous: number;
  /** With pipeline.probes: max_r mean P(r ≻ y_new) − ½. */
  probe_exploitability?: number;
  /** With pipeline.probes: mean P(r ≻ y_new) for each probe r, in the order of pipeline.probes. */
  probe_win_rates?: number[];
  seconds: number;
  /**
   * This process's peak resident memory so far, in MB (its high-water mark when the iteration ended): with the
   * embedded services, generator, oracle and optimizer included; with remote ones, the loop alone.
   */
  peak_rss_mb: number;
}

/** The process's resident-memory high-water mark, in MB. */
export function peakRssMb(): number {
  return Math.round(process.resourceUsage().maxRSS / 1024);
}

export interface LoopOptions {
  config: PipelineConfig;
  splits: PromptSplits;
  clients: LoopClients;
  hub: TelemetryHub;
  /** The optimizer's loss for every iteration (overridden by `trainingParams.algorithm` when that is given). */
  algorithm: Algorithm;
  /** The run's training parameters, sent with every IterationStart (run-identity.ts `trainingParams`). */
  trainingParams?: MessageInitShape<typeof TrainingParamsSchema>;
  /**
   * The run's identity (run-identity.ts), sent with every IterationStart: the optimizer trains this run from its
   * own state, and a policy it publishes for another run fails the loop.
   */
  run?: RunIdentity;
  /** First iteration to run (1 unless resuming). @default 1 */
  firstIteration?: number;
  /**
   * The run's output directory: each iteration's scored sets are journaled in <dir>/journal/ (what `--resume`
   * continues from). Without it the journal is kept in memory, for re-opening a broken optimizer stream.
   */
  journalDir?: string;
  /** The clients' message limit: a request over it is dropped as bad input instead of breaking its stream. */
  maxMessageBytes?: number;
  /** The policy version the first iteration starts from, when resuming: the generator is asked to load it. */
  resumeFrom?: { version: number; sha256: string };
  /**
   * The checksums of the run's versions known at the start (the base's, and those of finished iterations when
   * resuming). Every request pins its version with its checksum, so that a generator replica holding an earlier run's
   * copy of that version number pulls this run's instead; versions published later are added as they come.
   */
  versionSha256?: ReadonlyMap<number, string>;
  /** Called after each iteration (the run persists its state here). */
  onIteration?: (result: IterationResult) => void | Promise<void>;
  /** Aborted to stop the run (SIGINT/SIGTERM): see the file header. */
  stop?: AbortSignal;
}

/** Response tokens of a set's candidates (what the generator sampled and the oracle read). */
function responseTokens(set: CandidateSet): number {
  return set.candidates.reduce((n, c) => n + c.tokenIds.length, 0);
}

/** A scored set as the telemetry's JudgedSet (what the dashboard shows of the data). */
function judgedSet(set: ScoredSet): MessageInitShape<typeof JudgedSetSchema> {
  return {
    promptId: set.prompt.id,
    prompt: set.prompt.prompt,
    policyVersion: set.policyVersion,
    candidates: set.candidates.map((c, i) => ({ text: c.text, winRate: set.winRates[i], referenceLogprob: set.referenceLogprobs[i], tokens: c.tokenIds.length })),
    preferences: set.matrix.flat(),
  };
}

/**
 * A published version must be this run's: an optimizer that names another run (or another configuration of this
 * one) would hand the loop an earlier run's policy. An optimizer that records no run (one that predates run
 * identities) is trusted, with a warning.
 */
function checkPublishedRun(policy: PolicyVersion, run: RunIdentity | undefined): void {
  if (!run || run.runId === "") return;
  if (policy.runId === "") {
    log.warn({ version: policy.version, run: run.runId }, "the optimizer does not record which run a version belongs to: it cannot be checked against this run");
    return;
  }
  if (policy.runId !== run.runId || (run.fingerprint !== "" && policy.runFingerprint !== run.fingerprint)) {
    throw new RpcError(
      Code.FAILED_PRECONDITION,
      `the optimizer published version ${policy.version} for run ${policy.runId} (fingerprint ${policy.runFingerprint.slice(0, 12)}…), not for this run ${run.runId} (${run.fingerprint.slice(0, 12)}…): it mixes two runs`,
    );
  }
}

/** Where a stopped loop left off. */
export interface LoopStop {
  /** The iteration that was open (the next one, when stopped between two). */
  iteration: number;
  /** What the loop was doing. */
  stage: "before the iteration" | "sampling and training" | "loading the new policy" | "evaluation";
  /** Prompts of the open iteration scored and journaled (not sampled again on resume), of `totalPrompts`. */
  scoredPrompts: number;
  totalPrompts: number;
  /** The checkpoint the optimizer wrote on the way out, when asked and reachable. */
  checkpoint?: string;
}

export interface LoopResult {
  iterations: IterationResult[];
  /** Present when the loop was stopped before its last iteration was evaluated. */
  stopped?: LoopStop;
}

export async function runLoop(options: LoopOptions): Promise<LoopResult> {
  const { config, clients, hub, splits } = options;
  const faults = {
    streams: config.streamsPerService,
    reconnectTimeoutMs: config.reconnectTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
    maxMessageBytes: options.maxMessageBytes,
  };
  const generatorReady = (ms: number) => clients.generator.waitForReady(ms);
  const generator = createMultiplexer<GenerateRequest, GenerateResponse>((requests, signal) => clients.generator.generate(requests, { signal }), {
    name: "generator",
    ready: generatorReady,
    sizeOf: (r) => toBinary(GenerateRequestSchema, r).length,
    ...faults,
  });
  const oracle = createMultiplexer<CompareRequest, CompareResponse>((requests, signal) => clients.oracle.compare(requests, { signal }), {
    name: "oracle",
    ready: (ms) => clients.oracle.waitForReady(ms),
    sizeOf: (r) => toBinary(CompareRequestSchema, r).length,
    ...faults,
  });
  const scorer = createMultiplexer<ScoreRequest, ScoreResponse>((requests, signal) => clients.generator.score(requests, { signal }), {
    name: "generator scorer",
    ready: generatorReady,
    sizeOf: (r) => toBinary(ScoreRequestSchema, r).length,
    ...faults,
  });
  // LoadPolicy is a single call: if the generator is being restarted, wait for it and ask again; if the replica it
  // reached hangs, ask again (round_robin sends the next call to another replica; the one that missed the version
  // pulls it when a request pins it).
  const loadPolicyDeadlineMs = config.requestTimeoutMs > 0 ? config.requestTimeoutMs : 120_000;
  const loadPolicy = async (version: number, sha256: string) => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await clients.generator.loadPolicy({ version, source: clients.optimizerTarget, sha256 }, { deadlineMs: loadPolicyDeadlineMs });
      } catch (err) {
        const code = err instanceof RpcError ? err.code : undefined;
        const hung = code === Code.DEADLINE_EXCEEDED;
        if (code === undefined || !(isRetryable(code) || hung) || attempt >= 5) throw err;
        if (hung) log.warn({ version, deadlineMs: loadPolicyDeadlineMs }, "LoadPolicy unanswered in time: asking again");
        else await generatorReady(config.reconnectTimeoutMs);
      }
    }
  };
  // Stopping mid-iteration: the optimizer keeps the open iteration's progress in a checkpoint.
  const saveCheckpoint = async (): Promise<string | undefined> => {
    try {
      return (await clients.optimizer.saveCheckpoint({}, { deadlineMs: loadPolicyDeadlineMs })).checkpoint?.name;
    } catch (err) {
      log.warn({ err: (err as Error).message }, "stopping: the optimizer wrote no checkpoint; --resume replays the journal into its last one");
      return undefined;
    }
  };
  const stop$ = defer(() => whenAborted(options.stop));
  const results: IterationResult[] = [];
  let stopped: LoopStop | undefined;
  /** Every iteration ran to its end (else the multiplexers' pending requests are abandoned). */
  let finished = false;
  const shas = new Map(options.versionSha256 ?? []);
  if (options.resumeFrom) shas.set(options.resumeFrom.version, options.resumeFrom.sha256);
  try {
    hub.emit({ payload: { case: "runStatus", value: { state: RunState.RUNNING, message: `${splits.iterations.length} iterations` } } });
    for (let iteration = options.firstIteration ?? 1; iteration <= splits.iterations.length; iteration++) {
      const started = Date.now();
      const prompts = splits.iterations[iteration - 1];
      if (options.stop?.aborted) {
        stopped = { iteration, stage: "before the iteration", scoredPrompts: 0, totalPrompts: prompts.length };
        break;
      }
      const baseVersion = iteration - 1;
      if (options.resumeFrom && iteration === (options.firstIteration ?? 1) && baseVersion > 0) {
        await loadPolicy(options.resumeFrom.version, options.resumeFrom.sha256);
      }
      // Prompts already scored (journaled before a stop) are not sampled again: the journal replays them.
      const journal: Journal = options.journalDir ? fileJournal(journalPath(options.journalDir, iteration), iteration) : memoryJournal();
      const remaining = prompts.filter((p) => !journal.scoredPrompts.has(p.id));
      const resumed = prompts.length - remaining.length;
      if (resumed > 0) log.info({ iteration, resumed, remaining: remaining.length }, "resuming the iteration: prompts already scored come from the journal");
      const positions = new Map(prompts.map((p, i) => [p.id, i]));
      const sequential = config.schedule === "sequential";
      // Overlapped: a window of prompts between sampling and the optimizer's queue. Sequential: all of them.
      const inFlight = new Semaphore(sequential ? Math.max(prompts.length, 1) : Math.max(config.generateConcurrency, config.compareConcurrency) * 2);
      const barrier = <T>(): MonoTypeOperatorFunction<T> => (sequential ? (source) => source.pipe(toArray(), mergeMap((all) => from(all))) : identity);
      let generated = resumed;
      let compared = resumed;
      const tokens = { generate: 0, compare: 0 };
      let judged = 0;
      const skipped = { generate: 0, compare: 0 };
      // A dropped prompt gives its in-flight permit back and is counted and logged; the iteration goes on.
      const skip = (stage: "generate" | "compare", promptId: string, error: Error) => {
        skipped[stage]++;
        inFlight.release();
        log.warn({ iteration, stage, prompt: promptId, err: error.message }, "prompt dropped");
      };
      let published: { version: number; sha256: string } | undefined;

      const telemetry$ = from(remaining).pipe(
        mergeMap((prompt) => defer(() => inFlight.acquire()).pipe(map(() => prompt))),
        // Stopping: no new prompt enters; those already admitted go through and are journaled.
        takeUntil(stop$),
        generateCandidates({
          generator,
          samples: config.samplesPerPrompt,
          policyVersion: baseVersion,
          policySha256: shas.get(baseVersion),
          seed: config.seed * 1000 + iteration,
          positionOf: (prompt) => positions.get(prompt.id) ?? 0,
          concurrency: config.generateConcurrency,
          onSkip: (prompt, error) => skip("generate", prompt.id, error),
          sampling: config.sampling,
        }),
        tap((set) => {
          tokens.generate += responseTokens(set);
          hub.progress(iteration, Stage.GENERATE, ++generated, prompts.length, started, skipped.generate, tokens.generate);
        }),
        barrier(),
        compareCandidates({ oracle, concurrency: config.compareConcurrency, onSkip: (set, error) => skip("compare", set.prompt.id, error) }),
        tap((set) => {
          tokens.compare += responseTokens(set);
          hub.progress(iteration, Stage.COMPARE, ++compared, prompts.length, started, skipped.compare, tokens.compare);
        }),
        barrier(),
        estimateWinRates(config.winRate),
        config.referenceLogprobs === "rescore" ? rescoreReferences({ scorer, concurrency: config.compareConcurrency }) : identity,
        tap((set) => {
          if (config.judgedSetEvery > 0 && judged++ % config.judgedSetEvery === 0) hub.emit({ iteration, payload: { case: "judgedSet", value: judgedSet(set) } });
        }),
        barrier(),
        trainPolicy({
          train: (requests) => clients.optimizer.train(requests),
          start: create(IterationStartSchema, {
            iteration,
            totalPrompts: prompts.length,
            baseVersion,
            params: { algorithm: options.algorithm, ...options.trainingParams },
            run: options.run,
          }),
          journal,
          accepted: () => inFlight.release(),
          ready: (ms) => clients.optimizer.waitForReady(ms),
          reconnectTimeoutMs: config.reconnectTimeoutMs,
          stop: options.stop,
        }),
        tap((event) => {
          const forwarded = hub.emit({ ...event, iteration });
          if (forwarded.payload.case === "policyPublished") {
            const policy = forwarded.payload.value;
            checkPublishedRun(policy, options.run);
            published = { version: policy.version, sha256: policy.sha256 };
            shas.set(policy.version, policy.sha256);
          }
        }),
      );
      await lastValueFrom(telemetry$, { defaultValue: undefined });
      const where = (stage: LoopStop["stage"]): LoopStop => ({ iteration, stage, scoredPrompts: journal.scoredPrompts.size, totalPrompts: prompts.length });
      if (!published) {
        if (!options.stop?.aborted) throw new RpcError(Code.INTERNAL, `iteration ${iteration}: the optimizer finished without publishing a policy version`);
        const checkpoint = await saveCheckpoint();
        stopped = { ...where("sampling and training"), ...(checkpoint ? { checkpoint } : {}) };
        break;
      }
      // Published: the optimizer checkpointed the iteration's end itself; what is left (load, evaluate) runs again.
      if (options.stop?.aborted) {
        stopped = where("loading the new policy");
        break;
      }

      await loadPolicy(published.version, published.sha256);

      const evalStarted = Date.now();
      const evaluating = evaluate({
        generator,
        oracle,
        prompts: splits.evaluation,
        newVersion: published.version,
        baseVersion: 0,
        previousVersion: baseVersion,
        versionSha256: shas,
        samples: config.evalSamples,
        probes: config.probes,
        seed: config.seed * 7919,
        concurrency: config.generateConcurrency,
        onProgress: (done, sampled) => hub.progress(iteration, Stage.EVALUATE, done, splits.evaluation.length, evalStarted, 0, sampled),
        sampling: config.sampling,
      });
      const evaluation = await Promise.race([evaluating, whenAborted(options.stop).then(() => undefined)]);
      if (!evaluation) {
        stopped = where("evaluation");
        break;
      }
      const result: IterationResult = {
        iteration,
        prompts: compared,
        skippedPrompts: skipped.generate + skipped.compare,
        ...(resumed > 0 ? { resumedPrompts: resumed } : {}),
        policyVersion: published.version,
        policySha256: published.sha256,
        win_rate_vs_base: evaluation.winRateVsBase,
        win_rate_vs_previous: evaluation.winRateVsPrevious,
        ...(evaluation.probeExploitability !== undefined ? { probe_exploitability: evaluation.probeExploitability } : {}),
        ...(evaluation.probeWinRates !== undefined ? { probe_win_rates: evaluation.probeWinRates } : {}),
        seconds: (Date.now() - started) / 1000,
        peak_rss_mb: peakRssMb(),
      };
      hub.emit({
        iteration,
        payload: {
          case: "iterationSummary",
          value: {
            prompts: result.prompts,
            winRateVsBase: result.win_rate_vs_base,
            winRateVsPrevious: result.win_rate_vs_previous,
            seconds: result.seconds,
            probeExploitability: result.probe_exploitability,
            policy: { version: published.version, sha256: published.sha256, iteration },
          },
        },
      });
      results.push(result);
      await options.onIteration?.(result);
    }
    if (stopped) {
      const message = `stopped (${String(options.stop?.reason ?? "requested")}) in iteration ${stopped.iteration}, ${stopped.stage}: ${stopped.scoredPrompts} of ${stopped.totalPrompts} prompts journaled`;
      hub.emit({ payload: { case: "runStatus", value: { state: RunState.STOPPED, message } } });
    } else hub.emit({ payload: { case: "runStatus", value: { state: RunState.DONE } } });
    finished = !stopped;
    return { iterations: results, ...(stopped ? { stopped } : {}) };
  } catch (err) {
    hub.emit({ payload: { case: "runStatus", value: { state: RunState.FAILED, message: (err as Error).message } } });
    throw err;
  } finally {
    // Done: the streams end once answered. Stopped or failed: whatever is still pending is abandoned.
    for (const mux of [generator, oracle, scorer]) {
      if (finished) mux.close();
      else mux.abort(new RpcError(Code.CANCELLED, stopped ? "the loop is stopping" : "the loop failed"));
    }
  }
}
