/**
 * The generator's core, testable without gRPC: the policy versions held in memory, request validation, and a
 * bounded scheduler that batches concurrent requests onto the engine.
 *
 * Versions: version 0 is the base model directory, loaded at start and never evicted. `loadPolicy` pulls a version
 * from an optimizer (lib/weights: verified, atomic), loads it and makes it current. "Current" is what unpinned
 * requests run on, and only LoadPolicy changes it.
 *
 * Pinned versions: the loop pins every request to a version but sends its one LoadPolicy to one replica, and a
 * restarted replica holds only the base. So a request pinned to a version this generator does not hold pulls it
 * from `optimizerTarget` (the same verified pull as LoadPolicy; `pullPinnedVersions`, on by default) and then runs;
 * the pulled version does NOT become current (a pinned request may name an old version, and unpinned requests must
 * not change meaning behind the loop's back). Concurrent requests for one missing version share one pull; pulls and
 * LoadPolicy calls run one at a time (they write the same folders). A request waits for the pull unless its call is
 * cancelled (the pull goes on for the others, bounded by `loadTimeoutMs`). A failed pull fails the requests waiting
 * for it with the optimizer's code (NOT_FOUND for a version it never published, UNAVAILABLE when it cannot be
 * reached, DATA_LOSS for a checksum mismatch, ...) and a message naming the version, the optimizer and the cause;
 * nothing is remembered, so a later request tries again. Without optimizerTarget (or with pullPinnedVersions false)
 * such a request fails with FAILED_PRECONDITION saying how to fix it.
 *
 * Eviction: the generator keeps `versionsInMemory` versions, the base included, evicting the least recently loaded
 * one that is neither current nor held by a request (each accepted request holds a reference until it is answered;
 * requests waiting for a pull have theirs taken when the pull lands, so it cannot be evicted before they run).
 * While every surplus version is in use the generator holds more, and evicts when the last user is done: a version
 * in use is never evicted, so a pinned request never pulls what a running one holds. A version replaced by LoadPolicy
 * with another checksum stops taking requests at once; its running requests finish first.
 *
 * Scheduling: every accepted request becomes one job in one queue bounded by `maxQueuedRequests` (beyond it:
 * RESOURCE_EXHAUSTED, never unbounded memory). Up to `maxConcurrentRuns` engine runs go at once; a run takes the
 * oldest job and every queued job that can share its batch, up to `maxBatch` rows:
 *  - Generate with a seed shares a batch with other seeded requests of the same version and sampling options
 *    (temperature, top-p, top-k, max_new_tokens after the context clamp, stop_on_eos; prompt lengths may differ:
 *    rows are left-padded and masked). Each row keeps its own generator: row i of a request with seed s draws from
 *    createRng(s, i) (the engines' per-row `rows` option), exactly the stream it would use running alone, so its
 *    tokens depend only on (seed, i, prompt, params, version) — reproducible whatever else the server is doing
 *    (test/services/generator/batching.test.ts checks alone = batched on both engines).
 *  - Generate without a seed shares a batch with other unseeded requests of the same version and sampling options;
 *    the batch gets a fresh random seed. Seeded and unseeded requests do not share runs.
 *  - Score jobs of the same version share batches (padding is masked, so a score does not depend on its batch-mates
 *    beyond float rounding).
 * Runs start on the next event-loop turn at the earliest, so requests that arrive together batch together; the oldest
 * unseeded job waits up to `maxWaitMs` for batch-mates while its batch is not full (a gRPC stream's requests arrive
 * over several turns). Seeded Generate jobs never wait: they take the compatible seeded jobs already queued (those
 * that arrived while the previous run went on).
 *
 * Requests are the protobuf messages themselves (their field names are the ones errors name); `generate` and `score`
 * never throw: a bad or failed request is a response with `error` set.
 */
import { create } from "@bufbuild/protobuf";
import { randomInt } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type PolicyVersion, PolicyVersionSchema, StatusSchema } from "../../gen/sppo/v1/common_pb.js";
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
import type { EngineConfig } from "../../lib/config/engine.js";
import type { GeneratorConfig } from "../../lib/config/generator.js";
import type { ClientConfig } from "../../lib/config/server.js";
import { Code, RpcError } from "../../lib/errors.js";
import { invalidUtf8 } from "../../lib/grpc/definition.js";
import { log } from "../../lib/log.js";
import { directoryManifest, pullWeights } from "../../lib/weights/index.js";
import { encodePrompt, ModelFormatError, PolicyTokenizer } from "../../models/index.js";
import { type EngineLoader, type EngineSample, type EngineSampleOptions, type EngineScore, loadEngine, type PolicyEngine, type ScorePair } from "./engine.js";

/** A request that failed validation: the field at fault and why. */
class FieldError extends RpcError {
  constructor(
    code: Code,
    readonly field: string,
    reason: string,
  ) {
    super(code, `${field}: ${reason}`);
  }
}

const invalid = (field: string, reason: string) => new FieldError(Code.INVALID_ARGUMENT, field, reason);
const cancelled = () => new RpcError(Code.CANCELLED, "generator: the call was cancelled");
const shuttingDown = () => new RpcError(Code.UNAVAILABLE, "generator: shutting down");

/** `promise`, or CANCELLED as soon as `signal` aborts (the promise itself goes on). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(cancelled());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(cancelled());
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}

/** One policy version in memory. */
interface PolicyHandle {
  info: PolicyVersion;
  dir: string;
  engine: PolicyEngine;
  tokenizer: PolicyTokenizer | undefined;
  eosId: number | undefined;
  padId: number;
  /** Requests holding this version (accepted, not yet answered). */
  refs: number;
  /** Evicted: no new request may use it; disposed when refs reaches 0. */
  retired: boolean;
  /** Whether `dir` is the generator's own copy (deleted on eviction) rather than the configured base directory. */
  ownsDir: boolean;
}

/** An on-demand pull of a pinned version, shared by the requests waiting for it. */
interface PinnedPull {
  done: Promise<void>;
  /** Requests waiting for the pull; the pull takes one reference on the version for each when it lands. */
  waiters: number;
  /** The version, once pulled (its waiters' references already taken). */
  handle: PolicyHandle | undefined;
}

type Job =
  | {
      kind: "sample";
      handle: PolicyHandle;
      prompt: number[];
      k: number;
      options: Omit<EngineSampleOptions, "seed" | "rows">;
      /** The request's seed; undefined: the run's random seed (and the job may share its run). */
      seed: number | undefined;
      /** performance.now() when queued. */
      enqueuedAt: number;
      resolve(samples: EngineSample[]): void;
      reject(err: unknown): void;
    }
  | { kind: "score"; handle: PolicyHandle; pairs: ScorePair[]; enqueuedAt: number; resolve(scores: EngineScore[]): void; reject(err: unknown): void };

const rowsOf = (job: Job) => (job.kind === "sample" ? job.k : job.pairs.length);

/** Whether `b` may run in the same engine run as `a`. */
function compatible(a: Job, b: Job): boolean {
  if (a.handle !== b.handle) return false;
  if (a.kind === "score" && b.kind === "score") return true;
  if (a.kind !== "sample" || b.kind !== "sample" || (a.seed === undefined) !== (b.seed === undefined)) return false;
  // Equal maxNewTokens (already clamped to each job's room in the context) keep every row's length what it is alone.
  const x = a.options;
  const y = b.options;
  return x.temperature === y.temperature && x.topP === y.topP && x.topK === y.topK && x.maxNewTokens === y.maxNewTokens && x.eosId === y.eosId;
}

/** The generator's settings: its config section, plus how it calls optimizers. */
export interface PolicyGeneratorOptions {
  generator: GeneratorConfig;
  /** The tfjs engine section: its backend applies when generator.tfjsBackend is unset. */
  engine?: Pick<EngineConfig, "backend">;
  /** Client settings for GetWeights calls (TLS, message limits). */
  client?: Partial<ClientConfig>;
  /** Replaces engine selection (tests, and programs that bring their own engine). */
  engineLoader?: EngineLoader;
}

/** Result of a LoadPolicy. */
export interface LoadResult {
  policy: PolicyVersion;
  /** Seconds spent pulling and loading (≈ 0 when the version was already held). */
  loadSeconds: number;
}

function readJsonIfPresent(path: string): Record<string, unknown> | undefined {
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new ModelFormatError(`${path}: not valid JSON (${(err as Error).message})`);
  }
}

/** The tokenizer of a model directory, or undefined when it has none (then only token ids are accepted). */
function loadTokenizer(dir: string): PolicyTokenizer | undefined {
  const json = readJsonIfPresent(join(dir, "tokenizer.json"));
  if (!json) return undefined;
  try {
    return new PolicyTokenizer(json, readJsonIfPresent(join(dir, "tokenizer_config.json")) ?? {});
  } catch (err) {
    throw new ModelFormatError(`${join(dir, "tokenizer.json")}: cannot build the tokenizer (${(err as Error).message})`);
  }
}

/** The model's EOS id: the tokenizer's, else config.json's eos_token_id. */
function eosOf(dir: string, tokenizer: PolicyTokenizer | undefined): number | undefined {
  if (tokenizer?.eosId !== undefined) return tokenizer.eosId;
  const eos = readJsonIfPresent(join(dir, "config.json"))?.eos_token_id;
  if (typeof eos === "number") return eos;
  if (Array.isArray(eos) && typeof eos[0] === "number") return eos[0];
  return undefined;
}

/** Removes the `.tmp-*` folders an interrupted pull left in `dir` (lib/weights publishes by renaming them). */
function removeStaleTemps(dir: string): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory() && entry.name.startsWith(".tmp-")) rmSync(join(dir, entry.name), { recursive: true, force: true });
  }
}

/** A seed from the request: the low 53 bits of the uint64, so that every seed maps to one exact double. */
function seedOf(seed: bigint): number {
  return Number(BigInt.asUintN(53, seed));
}

export class PolicyGenerator {
  private readonly config: GeneratorConfig;
  private readonly versions = new Map<number, PolicyHandle>();
  /** Non-base versions in load order, oldest first (eviction order). */
  private readonly loadOrder: number[] = [];
  private current: PolicyHandle;
  private readonly queue: Job[] = [];
  private running = 0;
  private pumpScheduled = false;
  private closed = false;
  /** LoadPolicy calls and on-demand pulls run one at a time. */
  private loading: Promise<unknown> = Promise.resolve();
  /** On-demand pulls of pinned versions in progress, by version. */
  private readonly pulls = new Map<number, PinnedPull>();
  /** Folders of the versions not yet disposed (a new copy of a version must not be written over one in use). */
  private readonly openDirs = new Set<string>();
  /** Aborted by close(): stops on-demand pulls. */
  private readonly closing = new AbortController();
  private readonly weightsDir: string;
  private readonly ownsWeightsDir: boolean;

  private constructor(
    private readonly options: PolicyGeneratorOptions,
    base: PolicyHandle,
    weightsDir: string,
    ownsWeightsDir: boolean,
  ) {
    this.config = options.generator;
    this.current = base;
    this.versions.set(0, base);
    this.weightsDir = weightsDir;
    this.ownsWeightsDir = ownsWeightsDir;
  }

  /** Loads the base policy (version 0) from `config.generator.modelDir`; fails at start-up on a bad directory. */
  static async create(options: PolicyGeneratorOptions): Promise<PolicyGenerator> {
    const config = options.generator;
    const ownsWeightsDir = config.weightsDir === "";
    const weightsDir = ownsWeightsDir ? mkdtempSync(join(tmpdir(), "sppo-generator-")) : config.weightsDir;
    try {
      if (!ownsWeightsDir) removeStaleTemps(weightsDir);
      if (!existsSync(join(config.modelDir, "config.json"))) {
        throw new ModelFormatError(
          `generator.modelDir: ${config.modelDir} holds no config.json (a model directory has config.json, model.safetensors and tokenizer.json; make the default policy with scripts/make-default-policy.ts)`,
        );
      }
      const { sha256 } = await directoryManifest(config.modelDir);
      const base = await PolicyGenerator.openVersion(options, config.modelDir, { version: 0, iteration: 0, sha256 }, false);
      const generator = new PolicyGenerator(options, base, weightsDir, ownsWeightsDir);
      const { version, sha256: hash, family, parameters } = base.info;
      log.info({ engine: base.engine.name, dir: config.modelDir, version, sha256: hash, family, parameters: Number(parameters) }, "generator: base policy loaded");
      return generator;
    } catch (err) {
      if (ownsWeightsDir) rmSync(weightsDir, { recursive: true, force: true });
      throw err;
    }
  }

  private static async openVersion(
    options: PolicyGeneratorOptions,
    dir: string,
    info: { version: number; iteration: number; sha256: string },
    ownsDir: boolean,
  ): Promise<PolicyHandle> {
    const config = options.generator;
    const tokenizer = loadTokenizer(dir);
    const engineOptions = { tfjsBackend: config.tfjsBackend ?? options.engine?.backend ?? "auto", threads: config.onnxThreads, maxBatch: config.maxBatch };
    const engine = options.engineLoader ? await options.engineLoader(dir, engineOptions) : await loadEngine(config.engine, dir, engineOptions);
    const eosId = eosOf(dir, tokenizer);
    return {
      info: create(PolicyVersionSchema, { ...info, family: engine.family, parameters: BigInt(engine.parameters) }),
      dir,
      engine,
      tokenizer,
      eosId,
      padId: tokenizer?.padId ?? eosId ?? 0,
      refs: 0,
      retired: false,
      ownsDir,
    };
  }

  /** The current policy and every version held, by version. */
  getPolicy(): { current: PolicyVersion; loaded: PolicyVersion[] } {
    return { current: this.current.info, loaded: [...this.versions.keys()].sort((a, b) => a - b).map((v) => (this.versions.get(v) as PolicyHandle).info) };
  }

  /** Name of the engine the current version runs on. */
  get engineName(): string {
    return this.current.engine.name;
  }

  /** On-demand pulls in progress: version → requests waiting for it (for metrics and tests). */
  get pulling(): Map<number, number> {
    return new Map([...this.pulls].map(([version, pull]) => [version, pull.waiters]));
  }

  /** Requests waiting for the engine (not counting the ones running). */
  get queued(): number {
    return this.queue.length;
  }

  // ---- requests ------------------------------------------------------------------------------------------------

  /** The held version a request runs on (pinned or current) with a reference taken, or undefined when not held. */
  private tryAcquire(pinned: number | undefined): PolicyHandle | undefined {
    if (this.closed) throw shuttingDown();
    const handle = pinned === undefined ? this.current : this.versions.get(pinned);
    if (handle) handle.refs++;
    return handle;
  }

  /**
   * The version a request runs on (pinned or current), with a reference taken; the caller must release it. A pinned
   * version not held is pulled from the optimizer first (see the file header), the wait ending early on `signal`.
   */
  private async acquire(pinned: number | undefined, field: string, signal: AbortSignal | undefined): Promise<PolicyHandle> {
    const held = this.tryAcquire(pinned);
    if (held) return held;
    const version = pinned as number;
    const target = this.config.optimizerTarget;
    if (!target || !this.config.pullPinnedVersions) {
      const fix = target
        ? `generator.pullPinnedVersions is false: set it to true, or call LoadPolicy(${version}) on this generator first`
        : `set generator.optimizerTarget so that the generator pulls pinned versions from the optimizer, or call LoadPolicy(${version}) on this generator first`;
      throw new FieldError(Code.FAILED_PRECONDITION, field, `${this.notHeld(version)}; ${fix}`);
    }
    let pull = this.pulls.get(version);
    if (!pull) {
      const entry: PinnedPull = { done: Promise.resolve(), waiters: 0, handle: undefined };
      entry.done = this.loading.then(() => this.pullPinnedNow(version, target, field, entry));
      // Every waiter may have gone (cancelled): the failure must not be reported as unhandled.
      this.loading = entry.done.catch(() => {});
      this.pulls.set(version, entry);
      pull = entry;
    }
    pull.waiters++;
    try {
      await untilAborted(pull.done, signal);
    } catch (err) {
      // Cancelled after the pull landed: give back the reference it took for this request.
      if (pull.handle) this.release(pull.handle);
      else pull.waiters--;
      throw err;
    }
    return pull.handle as PolicyHandle;
  }

  /** "policy version N is not held by this generator (held: …; current: …)" */
  private notHeld(version: number): string {
    const held = [...this.versions.keys()].sort((a, b) => a - b).join(", ");
    return `policy version ${version} is not held by this generator (held: ${held}; current: ${this.current.info.version})`;
  }

  private release(handle: PolicyHandle): void {
    handle.refs--;
    if (handle.refs > 0) return;
    if (handle.retired) this.disposeHandle(handle);
    else if (this.versions.size > this.config.versionsInMemory) this.evict();
  }

  private disposeHandle(handle: PolicyHandle): void {
    this.openDirs.delete(handle.dir);
    handle.engine.dispose();
    if (handle.ownsDir) rmSync(handle.dir, { recursive: true, force: true });
    log.info({ version: handle.info.version }, "generator: policy version released");
  }

  /** Checks ids against the vocabulary, naming the first bad one. */
  private static checkIds(ids: readonly number[], vocabSize: number, field: string): void {
    for (let i = 0; i < ids.length; i++) {
      if (!(ids[i] >= 0 && ids[i] < vocabSize)) throw invalid(`${field}[${i}]`, `token id ${ids[i]} is outside the vocabulary [0, ${vocabSize})`);
    }
  }

  /** Prompt ids of a request: the ids given, or the text encoded (chat template unless raw). */
  private static promptIds(handle: PolicyHandle, ids: readonly number[], text: string, raw: boolean): { ids: number[]; field: string } {
    if (ids.length > 0) {
      PolicyGenerator.checkIds(ids, handle.engine.vocabSize, "prompt_token_ids");
      return { ids: [...ids], field: "prompt_token_ids" };
    }
    if (text.trim() === "") throw invalid("prompt", "empty (set prompt or prompt_token_ids)");
    // Bytes that were not UTF-8 arrive escaped (lib/grpc/definition.ts): refused here, naming the field.
    const notUtf8 = invalidUtf8(text);
    if (notUtf8) throw invalid("prompt", notUtf8);
    const tokenizer = handle.tokenizer;
    if (!tokenizer) throw new FieldError(Code.FAILED_PRECONDITION, "prompt", `policy version ${handle.info.version} has no tokenizer.json; send prompt_token_ids`);
    let encoded: number[];
    if (raw) {
      encoded = tokenizer.encode(text);
      if (tokenizer.bosId !== undefined && encoded[0] !== tokenizer.bosId) encoded.unshift(tokenizer.bosId);
    } else encoded = encodePrompt(tokenizer, text);
    if (encoded.length === 0) throw invalid("prompt", "encodes to no tokens");
    return { ids: encoded, field: "prompt" };
  }

  /** Sampling options of a request: its params over the configured defaults, checked. */
  private samplingOf(request: GenerateRequest): { options: Omit<EngineSampleOptions, "seed" | "eosId" | "padId">; stopOnEos: boolean; seed: number | undefined } {
    const d = this.config.sampling;
    const p = request.params;
    const temperature = p?.temperature ?? d.temperature;
    if (!(Number.isFinite(temperature) && temperature >= 0)) throw invalid("params.temperature", `must be a finite number ≥ 0, got ${temperature}`);
    const topP = p?.topP ?? d.topP;
    if (!(topP > 0 && topP <= 1)) throw invalid("params.top_p", `must be in (0, 1], got ${topP}`);
    const topK = p?.topK ?? d.topK;
    const maxNewTokens = p?.maxNewTokens ?? d.maxNewTokens;
    if (maxNewTokens < 1 || maxNewTokens > this.config.maxNewTokensLimit) {
      throw invalid("params.max_new_tokens", `must be in [1, ${this.config.maxNewTokensLimit}], got ${maxNewTokens}`);
    }
    return { options: { temperature, topP, topK, maxNewTokens }, stopOnEos: p?.stopOnEos ?? d.stopOnEos, seed: p?.seed === undefined ? undefined : seedOf(p.seed) };
  }

  /**
   * Samples K responses for one request. Never throws: failures come back in `error`. When `signal` aborts (the
   * client went away) while the request still waits for the engine, it leaves the queue and fails with CANCELLED.
   */
  async generate(request: GenerateRequest, signal?: AbortSignal): Promise<GenerateResponse> {
    let handle: PolicyHandle | undefined;
    try {
      const k = request.numSamples;
      if (k === 0) throw invalid("num_samples", "must be ≥ 1");
      if (k > this.config.maxSamples) throw invalid("num_samples", `${k} exceeds the maximum of ${this.config.maxSamples}`);
      const sampling = this.samplingOf(request);
      handle = await this.acquire(request.policyVersion, "policy_version", signal);
      const prompt = PolicyGenerator.promptIds(handle, request.promptTokenIds, request.prompt, request.raw);
      const context = handle.engine.contextLength;
      if (prompt.ids.length >= context) {
        throw invalid(prompt.field, `${prompt.ids.length} tokens, but the policy's context is ${context} tokens and at least one must be left for the response (at most ${context - 1} prompt tokens)`);
      }
      const options = {
        ...sampling.options,
        // The context bounds the response: a sample that reaches it ends with FINISH_REASON_LENGTH.
        maxNewTokens: Math.min(sampling.options.maxNewTokens, context - prompt.ids.length),
        eosId: sampling.stopOnEos ? handle.eosId : undefined,
        padId: handle.padId,
      };
      const samples = await this.enqueue<EngineSample[]>(signal, (resolve, reject) => ({
        kind: "sample",
        handle: handle as PolicyHandle,
        prompt: prompt.ids,
        k,
        options,
        seed: sampling.seed,
        enqueuedAt: performance.now(),
        resolve,
        reject,
      }));
      const tokenizer = handle.tokenizer;
      return create(GenerateResponseSchema, {
        requestId: request.requestId,
        policyVersion: handle.info.version,
        promptTokenIds: prompt.ids,
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
      return create(GenerateResponseSchema, { requestId: request.requestId, error: this.statusOf(err, request.requestId), engine: handle?.engine.name ?? "" });
    } finally {
      if (handle) this.release(handle);
    }
  }

  /** Scores the responses of one request. Never throws: failures come back in `error`. `signal` as for generate. */
  async score(request: ScoreRequest, signal?: AbortSignal): Promise<ScoreResponse> {
    let handle: PolicyHandle | undefined;
    try {
      const useIds = request.responses.length > 0;
      const count = useIds ? request.responses.length : request.responseTexts.length;
      if (count === 0) throw invalid("responses", "no responses (set responses or response_texts)");
      if (count > this.config.maxBatch) throw invalid(useIds ? "responses" : "response_texts", `${count} responses exceed the maximum of ${this.config.maxBatch} per request`);
      handle = await this.acquire(request.policyVersion, "policy_version", signal);
      const prompt = PolicyGenerator.promptIds(handle, request.promptTokenIds, request.prompt, false);
      const context = handle.engine.contextLength;
      if (prompt.ids.length > context) throw invalid(prompt.field, `${prompt.ids.length} tokens exceed the policy's context of ${context} tokens`);
      const pairs: ScorePair[] = [];
      for (let i = 0; i < count; i++) {
        let response: number[];
        let field: string;
        if (useIds) {
          field = `responses[${i}].token_ids`;
          response = [...request.responses[i].tokenIds];
          PolicyGenerator.checkIds(response, handle.engine.vocabSize, field);
        } else {
          field = `response_texts[${i}]`;
          const tokenizer = handle.tokenizer;
          if (!tokenizer) throw new FieldError(Code.FAILED_PRECONDITION, field, `policy version ${handle.info.version} has no tokenizer.json; send responses as token ids`);
          const notUtf8 = invalidUtf8(request.responseTexts[i]);
          if (notUtf8) throw invalid(field, notUtf8);
          // As a sampled response that ended on EOS: its text, then EOS (which is scored).
          response = tokenizer.encode(request.responseTexts[i]);
          if (handle.eosId !== undefined) response.push(handle.eosId);
        }
        if (prompt.ids.length + response.length > context) {
          throw invalid(field, `prompt (${prompt.ids.length}) + response (${response.length}) = ${prompt.ids.length + response.length} tokens exceed the policy's context of ${context}`);
        }
        pairs.push({ prompt: prompt.ids, response });
      }
      const scores = await this.enqueue<EngineScore[]>(signal, (resolve, reject) => ({ kind: "score", handle: handle as PolicyHandle, pairs, enqueuedAt: performance.now(), resolve, reject }));
      return create(ScoreResponseSchema, {
        requestId: request.requestId,
        policyVersion: handle.info.version,
        logprobs: scores.map((s) => s.logprob),
        tokenCounts: scores.map((s) => s.tokens),
        engine: handle.engine.name,
      });
    } catch (err) {
      return create(ScoreResponseSchema, { requestId: request.requestId, error: this.statusOf(err, request.requestId), engine: handle?.engine.name ?? "" });
    } finally {
      if (handle) this.release(handle);
    }
  }

  /** A failure as the sppo.v1.Status of a response. Unexpected throws are logged and become INTERNAL. */
  private statusOf(err: unknown, requestId: string) {
    const rpc = RpcError.from(err, Code.INTERNAL);
    if (!(err instanceof RpcError)) log.error({ err, requestId }, "generator: request failed unexpectedly");
    return create(StatusSchema, { code: rpc.code, message: rpc.message, field: err instanceof FieldError ? err.field : "" });
  }

  // ---- scheduling ----------------------------------------------------------------------------------------------

  private enqueue<T>(signal: AbortSignal | undefined, make: (resolve: (value: T) => void, reject: (err: unknown) => void) => Job): Promise<T> {
    if (signal?.aborted) return Promise.reject(cancelled());
    if (this.queue.length >= this.config.maxQueuedRequests) {
      return Promise.reject(new RpcError(Code.RESOURCE_EXHAUSTED, `generator: ${this.queue.length} requests are already queued (maxQueuedRequests); retry later`));
    }
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        const i = this.queue.indexOf(job);
        // Still waiting: drop it. Already running: let it finish (an engine run cannot be interrupted).
        if (i !== -1) {
          this.queue.splice(i, 1);
          reject(cancelled());
        }
      };
      const done = () => signal?.removeEventListener("abort", onAbort);
      const job = make(
        (value: T) => {
          done();
          resolve(value);
        },
        (err: unknown) => {
          done();
          reject(err);
        },
      );
      signal?.addEventListener("abort", onAbort, { once: true });
      this.queue.push(job);
      this.schedulePump();
    });
  }

  private schedulePump(delayMs = 0): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    const go = () => {
      this.pumpScheduled = false;
      this.pump();
    };
    // At the earliest the next turn: requests that arrive together batch together, and I/O gets in between runs.
    if (delayMs > 0) setTimeout(go, delayMs);
    else setImmediate(go);
  }

  /** How much longer the oldest job should wait for batch-mates (0: run it now). */
  private waitFor(first: Job): number {
    if (this.config.maxWaitMs === 0 || (first.kind === "sample" && first.seed !== undefined)) return 0;
    const left = first.enqueuedAt + this.config.maxWaitMs - performance.now();
    if (left <= 0) return 0;
    let rows = 0;
    for (const job of this.queue) if (job === first || compatible(first, job)) rows += rowsOf(job);
    return rows >= this.config.maxBatch ? 0 : left;
  }

  private pump(): void {
    while (this.running < this.config.maxConcurrentRuns && this.queue.length > 0) {
      const wait = this.waitFor(this.queue[0]);
      if (wait > 0) {
        this.schedulePump(wait);
        return;
      }
      const batch = this.takeBatch();
      this.running++;
      void this.run(batch).finally(() => {
        this.running--;
        if (this.queue.length > 0) this.schedulePump();
      });
    }
  }

  /** The oldest job and every queued job that may share its run, up to maxBatch rows, removed from the queue. */
  private takeBatch(): Job[] {
    const first = this.queue.shift() as Job;
    const batch = [first];
    let rows = rowsOf(first);
    for (let i = 0; i < this.queue.length && rows < this.config.maxBatch; ) {
      const job = this.queue[i];
      if (compatible(first, job) && rows + rowsOf(job) <= this.config.maxBatch) {
        batch.push(job);
        rows += rowsOf(job);
        this.queue.splice(i, 1);
      } else i++;
    }
    return batch;
  }

  private async run(batch: Job[]): Promise<void> {
    const first = batch[0];
    try {
      if (first.kind === "sample") {
        const jobs = batch as Extract<Job, { kind: "sample" }>[];
        const rows = jobs.flatMap((j) => Array.from({ length: j.k }, () => j.prompt));
        // Different prompt lengths share a run: the longest bounds every row's room in the context.
        const longest = Math.max(...jobs.map((j) => j.prompt.length));
        const maxNewTokens = Math.min(first.options.maxNewTokens, first.handle.engine.contextLength - longest);
        let sampling: EngineSampleOptions;
        if (first.seed === undefined) sampling = { ...first.options, maxNewTokens, seed: randomInt(0, 2 ** 48 - 1) };
        else {
          // Seeded jobs (all of them here): row i of a job draws from createRng(job seed, i), as when it runs alone.
          const seeds = jobs.flatMap((j) => Array.from({ length: j.k }, (_, i) => ({ seed: j.seed as number, stream: i })));
          sampling = { ...first.options, maxNewTokens, seed: first.seed, rows: seeds };
        }
        const samples = await first.handle.engine.sample(rows, sampling);
        let at = 0;
        for (const job of jobs) {
          job.resolve(samples.slice(at, at + job.k));
          at += job.k;
        }
      } else {
        const jobs = batch as Extract<Job, { kind: "score" }>[];
        const scores = await first.handle.engine.score(
          jobs.flatMap((j) => j.pairs),
          { padId: first.handle.padId },
        );
        let at = 0;
        for (const job of jobs) {
          job.resolve(scores.slice(at, at + job.pairs.length));
          at += job.pairs.length;
        }
      }
    } catch (err) {
      const failure = err instanceof RpcError ? err : new RpcError(Code.INTERNAL, `engine ${first.handle.engine.name}: ${(err as Error).message}`, { cause: err });
      if (!(err instanceof RpcError)) log.error({ err }, "generator: engine run failed");
      for (const job of batch) job.reject(failure);
    }
  }

  // ---- versions ------------------------------------------------------------------------------------------------

  /**
   * Makes `version` current, pulling it from the Optimizer at `source` (or the configured optimizerTarget) when it
   * is not held. `sha256`, when set, must match the version's checksum (DATA_LOSS otherwise). LoadPolicy calls run
   * one at a time.
   */
  loadPolicy(version: number, options: { source?: string; sha256?: string; signal?: AbortSignal } = {}): Promise<LoadResult> {
    const next = this.loading.then(() => this.loadPolicyNow(version, options));
    this.loading = next.catch(() => {});
    return next;
  }

  private async loadPolicyNow(version: number, options: { source?: string; sha256?: string; signal?: AbortSignal }): Promise<LoadResult> {
    if (this.closed) throw shuttingDown();
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    const expected = options.sha256?.toLowerCase() ?? "";
    if (expected && !/^[0-9a-f]{64}$/.test(expected)) throw invalid("sha256", `not a hex SHA-256 ("${options.sha256}")`);
    const held = this.versions.get(version);
    if (held && (!expected || expected === held.info.sha256)) {
      this.current = held;
      this.touch(version);
      log.info({ version }, "generator: policy version made current (already held)");
      return { policy: held.info, loadSeconds: seconds() };
    }
    if (version === 0) throw new RpcError(Code.DATA_LOSS, `sha256: the base policy (version 0) has SHA-256 ${held?.info.sha256}, expected ${expected}`);
    const target = options.source || this.config.optimizerTarget;
    if (!target) throw invalid("source", "empty, and the generator has no optimizerTarget configured");
    const { handle, bytes } = await this.fetchVersion(target, version, expected, options.signal);
    if (held) this.retire(held);
    this.versions.set(version, handle);
    this.current = handle;
    this.touch(version);
    this.evict();
    const loadSeconds = seconds();
    log.info({ version, bytes, loadSeconds, engine: handle.engine.name }, "generator: policy version loaded and made current");
    return { policy: handle.info, loadSeconds };
  }

  /**
   * Pulls `version` from the Optimizer at `target`, verified (against `sha256` when set), and opens it; the caller
   * installs the handle. Throws the pull's RpcError, FAILED_PRECONDITION for a directory that is not a model, or
   * UNAVAILABLE when the generator closed meanwhile.
   */
  private async fetchVersion(target: string, version: number, sha256: string, signal: AbortSignal | undefined): Promise<{ handle: PolicyHandle; bytes: number }> {
    // A copy of this version that LoadPolicy replaced (another checksum) may still serve requests: not written over.
    const destination = join(this.weightsDir, `v${version}`);
    const dir = this.openDirs.has(destination) ? join(this.weightsDir, `v${version}-${Date.now()}`) : destination;
    const pulled = await pullWeights({
      target,
      version,
      destination: dir,
      sha256,
      chunkBytes: this.config.chunkBytes,
      deadlineMs: this.config.loadTimeoutMs,
      signal,
      client: this.options.client,
    });
    let handle: PolicyHandle;
    try {
      handle = await PolicyGenerator.openVersion(this.options, pulled.dir, { version, iteration: pulled.policy.iteration, sha256: pulled.policy.sha256 }, true);
    } catch (err) {
      rmSync(pulled.dir, { recursive: true, force: true });
      if (err instanceof ModelFormatError) throw new RpcError(Code.FAILED_PRECONDITION, `version ${version}: ${err.message}`, { cause: err });
      throw err;
    }
    this.openDirs.add(handle.dir);
    if (this.closed) {
      this.disposeHandle(handle);
      throw shuttingDown();
    }
    return { handle, bytes: pulled.totalBytes };
  }

  /**
   * The on-demand pull of a pinned version (see the file header): fetches it unless a LoadPolicy queued earlier
   * brought it, adds it without making it current, and takes one reference for each request waiting. Failures
   * become a FieldError on `field` with the cause's code, naming the version, the optimizer and the cause.
   */
  private async pullPinnedNow(version: number, target: string, field: string, pull: PinnedPull): Promise<void> {
    try {
      if (this.closed) throw shuttingDown();
      let handle = this.versions.get(version);
      if (!handle) {
        const started = process.hrtime.bigint();
        let fetched: { handle: PolicyHandle; bytes: number };
        try {
          fetched = await this.fetchVersion(target, version, "", this.closing.signal);
        } catch (err) {
          if (this.closed) throw shuttingDown();
          const cause = RpcError.from(err, Code.INTERNAL);
          if (!(err instanceof RpcError)) log.error({ err, version }, "generator: on-demand pull failed unexpectedly");
          throw new FieldError(cause.code, field, `policy version ${version} is not held by this generator, and pulling it from the optimizer at ${target} failed: ${cause.message}`);
        }
        handle = fetched.handle;
        this.versions.set(version, handle);
        this.touch(version);
        const loadSeconds = Number(process.hrtime.bigint() - started) / 1e9;
        log.info(
          { version, bytes: fetched.bytes, loadSeconds, engine: handle.engine.name, waiting: pull.waiters, current: this.current.info.version },
          "generator: pinned policy version pulled on demand (current unchanged)",
        );
      }
      // The waiters' references, taken before anything else runs: eviction skips the version until they are done.
      handle.refs += pull.waiters;
      pull.handle = handle;
      this.evict();
    } finally {
      // In the same turn as the outcome: a request arriving later finds the version held, or starts a new pull.
      this.pulls.delete(version);
    }
  }

  /** Moves `version` to the newest end of the eviction order. */
  private touch(version: number): void {
    if (version === 0) return;
    const i = this.loadOrder.indexOf(version);
    if (i !== -1) this.loadOrder.splice(i, 1);
    this.loadOrder.push(version);
  }

  private retire(handle: PolicyHandle): void {
    handle.retired = true;
    if (handle.refs === 0) this.disposeHandle(handle);
  }

  /**
   * Drops the least recently loaded versions that are neither current nor held by a request until versionsInMemory
   * are held (the base always stays); what is still in use stays, and release() evicts again when it is done.
   */
  private evict(): void {
    while (this.versions.size > this.config.versionsInMemory) {
      const victim = this.loadOrder.find((v) => v !== this.current.info.version && (this.versions.get(v) as PolicyHandle).refs === 0);
      if (victim === undefined) break;
      this.loadOrder.splice(this.loadOrder.indexOf(victim), 1);
      const handle = this.versions.get(victim) as PolicyHandle;
      this.versions.delete(victim);
      this.retire(handle);
      log.info({ version: victim }, "generator: policy version evicted");
    }
  }

  /** Fails queued requests with UNAVAILABLE, waits for running ones, and frees every version. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closing.abort();
    const failure = shuttingDown();
    for (const job of this.queue.splice(0)) job.reject(failure);
    await this.loading.catch(() => {});
    while (this.running > 0) await new Promise((r) => setImmediate(r));
    for (const handle of this.versions.values()) this.retire(handle);
    this.versions.clear();
    if (this.ownsWeightsDir) rmSync(this.weightsDir, { recursive: true, force: true });
  }
}
