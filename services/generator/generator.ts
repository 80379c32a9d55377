/**
 * The generator's core, testable without gRPC: a facade over the policy versions it holds (versions.ts), the checks
 * of each request (request-checks.ts) and the bounded scheduler that batches concurrent requests onto the engine
 * (scheduler.ts). Each file's header gives its part of the design; services/generator/README.md the whole.
 *
 * `generate` and `score` never throw: a bad or failed request is a response with `error` set.
 */
import { create } from "@bufbuild/protobuf";
import type { PolicyVersion } from "../../gen/sppo/v1/common_pb.js";
import {
  CandidateSchema,
  FinishReason,
  type GenerateRequest,
  type GenerateResponse,
  GenerateResponseSchema,
  type ScoreRequest,
  type ScoreResponse,
  ScoreResponseSchema,
} from "../../gen/sppo/v1/generator_pb.js";
import { log } from "../../lib/log.js";
import { statusOf } from "./errors.js";
import { checkGenerateOnVersion, checkGenerateRequest, checkScoreRequest, scorePairsOf } from "./request-checks.js";
import { BatchScheduler } from "./scheduler.js";
import { type LoadResult, type PolicyGeneratorOptions, type PolicyHandle, VersionStore } from "./versions.js";

export type { LoadResult, PolicyGeneratorOptions } from "./versions.js";

export class PolicyGenerator {
  private closed = false;

  private constructor(
    private readonly options: PolicyGeneratorOptions,
    private readonly versions: VersionStore,
    private readonly scheduler: BatchScheduler,
  ) {}

  /** Loads the base policy (version 0) from `config.generator.modelDir`; fails at start-up on a bad directory. */
  static async create(options: PolicyGeneratorOptions): Promise<PolicyGenerator> {
    const versions = await VersionStore.open(options);
    const base = versions.current;
    const { version, sha256, family, parameters } = base.info;
    log.info({ engine: base.engine.name, dir: options.generator.modelDir, version, sha256, family, parameters: Number(parameters) }, "generator: base policy loaded");
    return new PolicyGenerator(options, versions, new BatchScheduler(options.generator));
  }

  /** The current policy and every version held, by version. */
  getPolicy(): { current: PolicyVersion; loaded: PolicyVersion[] } {
    return this.versions.getPolicy();
  }

  /** Name of the engine the current version runs on. */
  get engineName(): string {
    return this.versions.current.engine.name;
  }

  /** On-demand pulls in progress: version → requests waiting for it (for metrics and tests). */
  get pulling(): Map<number, number> {
    return this.versions.pulling;
  }

  /** Requests waiting for the engine (not counting the ones running). */
  get queued(): number {
    return this.scheduler.queued;
  }

  /**
   * Makes `version` current, pulling it from the Optimizer at `source` (or the configured optimizerTarget) when it
   * is not held. `sha256`, when set, must match the version's checksum (DATA_LOSS otherwise). LoadPolicy calls run
   * one at a time.
   */
  loadPolicy(version: number, options: { source?: string; sha256?: string; signal?: AbortSignal } = {}): Promise<LoadResult> {
    return this.versions.loadPolicy(version, options);
  }

  /**
   * Samples K responses for one request. Never throws: failures come back in `error`. When `signal` aborts (the
   * client went away) while the request still waits for the engine, it leaves the queue and fails with CANCELLED.
   */
  async generate(request: GenerateRequest, signal?: AbortSignal): Promise<GenerateResponse> {
    let handle: PolicyHandle | undefined;
    try {
      const sampling = checkGenerateRequest(request, this.options.generator);
      handle = await this.versions.acquire(request.policyVersion, "policy_version", signal, request.policySha256);
      const { prompt, options } = checkGenerateOnVersion(request, sampling, handle);
      const samples = await this.scheduler.sample({ handle, prompt, k: sampling.k, options, seed: sampling.seed }, signal);
      const tokenizer = handle.tokenizer;
      return create(GenerateResponseSchema, {
        requestId: request.requestId,
        policyVersion: handle.info.version,
        promptTokenIds: prompt,
        engine: handle.engine.name,
        candidates: samples.map((s, index) =>
          create(CandidateSchema, {
            index,
            tokenIds: s.tokenIds,
            text: tokenizer ? tokenizer.decode(s.tokenIds) : "",
            logprob: s.logprob,
            finishReason: s.finished ? FinishReason.EOS : FinishReason.LENGTH,
          }),
        ),
      });
    } catch (err) {
      return create(GenerateResponseSchema, { requestId: request.requestId, error: statusOf(err, request.requestId), engine: handle?.engine.name ?? "" });
    } finally {
      if (handle) this.versions.release(handle);
    }
  }

  /** Scores the responses of one request. Never throws: failures come back in `error`. `signal` as for generate. */
  async score(request: ScoreRequest, signal?: AbortSignal): Promise<ScoreResponse> {
    let handle: PolicyHandle | undefined;
    try {
      const shape = checkScoreRequest(request, this.options.generator);
      handle = await this.versions.acquire(request.policyVersion, "policy_version", signal, request.policySha256);
      const pairs = scorePairsOf(request, shape, handle);
      const scores = await this.scheduler.score(handle, pairs, signal);
      return create(ScoreResponseSchema, {
        requestId: request.requestId,
        policyVersion: handle.info.version,
        logprobs: scores.map((s) => s.logprob),
        tokenCounts: scores.map((s) => s.tokens),
        engine: handle.engine.name,
      });
    } catch (err) {
      return create(ScoreResponseSchema, { requestId: request.requestId, error: statusOf(err, request.requestId), engine: handle?.engine.name ?? "" });
    } finally {
      if (handle) this.versions.release(handle);
    }
  }

  /** Fails queued requests with UNAVAILABLE, waits for running ones, and frees every version. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.versions.stopTaking();
    await this.scheduler.close();
    await this.versions.close();
  }
}
