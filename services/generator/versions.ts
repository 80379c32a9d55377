/**
 * The policy versions a generator holds: a reference-counted store with eviction, LoadPolicy, and on-demand pulls of
 * pinned versions.
 *
 * Versions: version 0 is the base model directory, loaded at start and never evicted. `loadPolicy` pulls a version
 * from an optimizer (lib/weights: verified, atomic), loads it and makes it current. "Current" is what unpinned
 * requests run on, and only LoadPolicy changes it.
 *
 * Checksums: a request may pin its version's checksum too (policy_sha256). A copy held with another checksum (an
 * earlier run's version of that number, on a replica the new run's LoadPolicy did not reach) is then not used: it is
 * pulled again with the checksum and replaces the stale copy (DATA_LOSS when the optimizer serves another one). The
 * base (version 0) is the generator's own: another checksum for it is FAILED_PRECONDITION.
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
 * Eviction: the store keeps `versionsInMemory` versions, the base included, evicting the least recently loaded one
 * that is neither current nor held by a request (each accepted request holds a reference until it is answered;
 * requests waiting for a pull have theirs taken when the pull lands, so it cannot be evicted before they run). While
 * every surplus version is in use the store holds more, and evicts when the last user is done: a version in use is
 * never evicted, so a pinned request never pulls what a running one holds. A version replaced by LoadPolicy with
 * another checksum stops taking requests at once; its running requests finish first.
 */
import { create } from "@bufbuild/protobuf";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type PolicyVersion, PolicyVersionSchema } from "../../gen/sppo/v1/common_pb.js";
import { removeStaleTemps } from "../../lib/atomic.js";
import type { EngineConfig } from "../../lib/config/engine.js";
import type { GeneratorConfig } from "../../lib/config/generator.js";
import type { ClientConfig } from "../../lib/config/server.js";
import { Code, fieldError, kindError, RpcError } from "../../lib/errors.js";
import { log } from "../../lib/log.js";
import { untilAborted } from "../../lib/streams/until-aborted.js";
import { directoryManifest, pullWeights } from "../../lib/weights/index.js";
import type { OrtSessionOptions } from "../../models/onnx/session.js";
import { type EngineLoader, type EngineLoadOptions, loadEngine } from "./engine.js";
import { checkModelDir, notSameArchitecture, type OpenedModel, openModelDir } from "./model-dir.js";
import { cancelled, invalid, shuttingDown } from "./errors.js";

/** One policy version in memory. */
export interface PolicyHandle extends OpenedModel {
  info: PolicyVersion;
  dir: string;
  /** Requests holding this version (accepted, not yet answered). */
  refs: number;
  /** Evicted: no new request may use it; disposed when refs reaches 0. */
  retired: boolean;
  /** Whether `dir` is the generator's own copy (deleted on eviction) rather than the configured base directory. */
  ownsDir: boolean;
}

/** An on-demand pull of a pinned version (with the checksum asked for, or any), shared by the requests waiting for it. */
interface PinnedPull {
  version: number;
  done: Promise<void>;
  /** Requests waiting for the pull; the pull takes one reference on the version for each when it lands. */
  waiters: number;
  /** The version, once pulled (its waiters' references already taken). */
  handle: PolicyHandle | undefined;
}

/** The generator's settings: its config section, plus how it calls optimizers. */
export interface PolicyGeneratorOptions {
  generator: GeneratorConfig;
  /** The engine section every engine reads (generator.tfjsBackend and generator.onnxThreads override it when set). */
  engine?: Partial<Pick<EngineConfig, "backend" | "onnx">>;
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

/** The engine section as the generator's engines take it: generator.tfjsBackend and generator.onnxThreads win when set. */
export function engineLoadOptions(options: Pick<PolicyGeneratorOptions, "generator" | "engine">): EngineLoadOptions {
  const config = options.generator;
  const onnx: OrtSessionOptions = options.engine?.onnx ?? {};
  return {
    tfjsBackend: config.tfjsBackend ?? options.engine?.backend ?? "auto",
    onnx: { ...onnx, intraOpThreads: config.onnxThreads ?? onnx.intraOpThreads ?? 0 },
    maxBatch: config.maxBatch,
  };
}

/** Opens the model directory `dir` as version `info` (its engine per the options). */
async function openVersion(options: PolicyGeneratorOptions, dir: string, info: { version: number; iteration: number; sha256: string }, ownsDir: boolean): Promise<PolicyHandle> {
  const config = options.generator;
  const engineOptions = engineLoadOptions(options);
  const load: EngineLoader = options.engineLoader ?? ((d, o) => loadEngine(config.engine, d, o));
  const opened = await openModelDir(dir, load, engineOptions);
  return {
    ...opened,
    info: create(PolicyVersionSchema, { ...info, family: opened.engine.family, parameters: BigInt(opened.engine.parameters) }),
    dir,
    refs: 0,
    retired: false,
    ownsDir,
  };
}

/** The reference-counted store of the policy versions a generator holds (see the file header). */
export class VersionStore {
  private readonly config: GeneratorConfig;
  private readonly versions = new Map<number, PolicyHandle>();
  /** Non-base versions in load order, oldest first (eviction order). */
  private readonly loadOrder: number[] = [];
  private currentHandle: PolicyHandle;
  private closed = false;
  /** LoadPolicy calls and on-demand pulls run one at a time. */
  private loading: Promise<unknown> = Promise.resolve();
  /** On-demand pulls of pinned versions in progress, by `${version}:${checksum asked for}`. */
  private readonly pulls = new Map<string, PinnedPull>();
  /** Folders of the versions not yet disposed (a new copy of a version must not be written over one in use). */
  private readonly openDirs = new Set<string>();
  /** Aborted by close(): stops on-demand pulls. */
  private readonly closing = new AbortController();

  private constructor(
    private readonly options: PolicyGeneratorOptions,
    base: PolicyHandle,
    private readonly weightsDir: string,
    private readonly ownsWeightsDir: boolean,
  ) {
    this.config = options.generator;
    this.currentHandle = base;
    this.versions.set(0, base);
  }

  /** Loads the base policy (version 0) from `generator.modelDir`; fails at start-up on a bad directory. */
  static async open(options: PolicyGeneratorOptions): Promise<VersionStore> {
    const config = options.generator;
    const ownsWeightsDir = config.weightsDir === "";
    const weightsDir = ownsWeightsDir ? mkdtempSync(join(tmpdir(), "sppo-generator-")) : config.weightsDir;
    try {
      if (!ownsWeightsDir) removeStaleTemps(weightsDir);
      checkModelDir(config.modelDir, "generator.modelDir");
      const { sha256 } = await directoryManifest(config.modelDir);
      const base = await openVersion(options, config.modelDir, { version: 0, iteration: 0, sha256 }, false);
      return new VersionStore(options, base, weightsDir, ownsWeightsDir);
    } catch (err) {
      if (ownsWeightsDir) rmSync(weightsDir, { recursive: true, force: true });
      throw err;
    }
  }

  /** The version unpinned requests run on. */
  get current(): PolicyHandle {
    return this.currentHandle;
  }

  /** The current policy and every version held, by version. */
  getPolicy(): { current: PolicyVersion; loaded: PolicyVersion[] } {
    return { current: this.currentHandle.info, loaded: [...this.versions.keys()].sort((a, b) => a - b).map((v) => (this.versions.get(v) as PolicyHandle).info) };
  }

  /** On-demand pulls in progress: version → requests waiting for it (for metrics and tests). */
  get pulling(): Map<number, number> {
    const out = new Map<number, number>();
    for (const pull of this.pulls.values()) out.set(pull.version, (out.get(pull.version) ?? 0) + pull.waiters);
    return out;
  }

  // ---- references ----------------------------------------------------------------------------------------------

  /**
   * The held version a request runs on (pinned or current) with a reference taken, or undefined when not held (or
   * held with another checksum than `sha256`).
   */
  private tryAcquire(pinned: number | undefined, sha256: string): PolicyHandle | undefined {
    if (this.closed) throw shuttingDown();
    const handle = pinned === undefined ? this.currentHandle : this.versions.get(pinned);
    if (!handle || (sha256 && handle.info.sha256 !== sha256)) return undefined;
    handle.refs++;
    return handle;
  }

  /**
   * The version a request runs on (pinned or current), with a reference taken; the caller must release it. A pinned
   * version not held is pulled from the optimizer first (see the file header), the wait ending early on `signal`.
   * With `sha256` (the request's policy_sha256) the version must have that checksum: a copy held with another one
   * (an earlier run's version of that number) is pulled again and replaced; the base (version 0) cannot be.
   */
  async acquire(pinned: number | undefined, field: string, signal: AbortSignal | undefined, sha256 = ""): Promise<PolicyHandle> {
    const expected = sha256.toLowerCase();
    if (expected) {
      if (!/^[0-9a-f]{64}$/.test(expected)) throw fieldError(Code.INVALID_ARGUMENT, "policy_sha256", `not a hex SHA-256 ("${sha256}")`);
      if (pinned === undefined) throw fieldError(Code.INVALID_ARGUMENT, "policy_sha256", "needs policy_version: a checksum pins a version");
    }
    const held = this.tryAcquire(pinned, expected);
    if (held) return held;
    const version = pinned as number;
    if (version === 0 && this.versions.has(0)) {
      const base = this.versions.get(0) as PolicyHandle;
      throw fieldError(
        Code.FAILED_PRECONDITION,
        "policy_sha256",
        `the request's version 0 has SHA-256 ${expected}, this generator's base (generator.modelDir ${base.dir}) ${base.info.sha256}: the run is on another base model; start the generator on the run's base`,
      );
    }
    const target = this.config.optimizerTarget;
    if (!target || !this.config.pullPinnedVersions) {
      const fix = target
        ? `generator.pullPinnedVersions is false: set it to true, or call LoadPolicy(${version}) on this generator first`
        : `set generator.optimizerTarget so that the generator pulls pinned versions from the optimizer, or call LoadPolicy(${version}) on this generator first`;
      throw fieldError(Code.FAILED_PRECONDITION, field, `${this.notHeld(version, expected)}; ${fix}`);
    }
    const key = `${version}:${expected}`;
    let pull = this.pulls.get(key);
    if (!pull) {
      const entry: PinnedPull = { version, done: Promise.resolve(), waiters: 0, handle: undefined };
      entry.done = this.loading.then(() => this.pullPinnedNow(version, expected, target, field, entry));
      // Every waiter may have gone (cancelled): the failure must not be reported as unhandled.
      this.loading = entry.done.catch(() => {});
      this.pulls.set(key, entry);
      pull = entry;
    }
    pull.waiters++;
    try {
      await untilAborted(pull.done, signal, cancelled);
    } catch (err) {
      // Cancelled after the pull landed: give back the reference it took for this request.
      if (pull.handle) this.release(pull.handle);
      else pull.waiters--;
      throw err;
    }
    return pull.handle as PolicyHandle;
  }

  /** "policy version N is not held by this generator (held: …; current: …)" */
  private notHeld(version: number, sha256 = ""): string {
    const copy = this.versions.get(version);
    if (copy && sha256) return `policy version ${version} is held by this generator with SHA-256 ${copy.info.sha256}, not ${sha256} (another run's copy)`;
    const held = [...this.versions.keys()].sort((a, b) => a - b).join(", ");
    return `policy version ${version} is not held by this generator (held: ${held}; current: ${this.currentHandle.info.version})`;
  }

  /** Gives back a reference `acquire` took; a retired version goes with its last reference. */
  release(handle: PolicyHandle): void {
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

  // ---- loading -------------------------------------------------------------------------------------------------

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
      this.currentHandle = held;
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
    this.currentHandle = handle;
    this.touch(version);
    this.evict();
    const loadSeconds = seconds();
    log.info({ version, bytes, loadSeconds, engine: handle.engine.name }, "generator: policy version loaded and made current");
    return { policy: handle.info, loadSeconds };
  }

  /**
   * Pulls `version` from the Optimizer at `target`, verified (against `sha256` when set), and opens it; the caller
   * installs the handle. Throws the pull's RpcError, FAILED_PRECONDITION for a directory that is not a model, or
   * UNAVAILABLE when the store closed meanwhile.
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
      // A version is the base model trained further: one of another family or shape belongs to another model (an
      // optimizer on another base, or holding another run), and is refused before its weights are loaded.
      const base = this.versions.get(0) as PolicyHandle;
      const why = notSameArchitecture(base.dir, pulled.dir);
      if (why) {
        throw new RpcError(
          Code.FAILED_PRECONDITION,
          `version ${version} from the optimizer at ${target} does not fit this generator's base model (generator.modelDir ${base.dir}): ${why}. The optimizer holds another base model or another run's policy: give it the same base model as the generator (optimizer.modelDir)`,
        );
      }
      handle = await openVersion(this.options, pulled.dir, { version, iteration: pulled.policy.iteration, sha256: pulled.policy.sha256 }, true);
    } catch (err) {
      rmSync(pulled.dir, { recursive: true, force: true });
      if (RpcError.is(err, "model-format")) throw kindError("model-format", `version ${version}: ${err.message}`, { cause: err });
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
   * become an error on `field` with the cause's code, naming the version, the optimizer and the cause.
   */
  private async pullPinnedNow(version: number, sha256: string, target: string, field: string, pull: PinnedPull): Promise<void> {
    try {
      if (this.closed) throw shuttingDown();
      let handle = this.versions.get(version);
      if (!handle || (sha256 && handle.info.sha256 !== sha256)) {
        const stale = handle;
        const started = process.hrtime.bigint();
        let fetched: { handle: PolicyHandle; bytes: number };
        try {
          fetched = await this.fetchVersion(target, version, sha256, this.closing.signal);
        } catch (err) {
          if (this.closed) throw shuttingDown();
          const cause = RpcError.from(err, Code.INTERNAL);
          if (!(err instanceof RpcError)) log.error({ err, version }, "generator: on-demand pull failed unexpectedly");
          const why = stale ? `is held by this generator with another checksum (${stale.info.sha256}, not ${sha256})` : "is not held by this generator";
          throw fieldError(cause.code, field, `policy version ${version} ${why}, and pulling it from the optimizer at ${target} failed: ${cause.message}`);
        }
        handle = fetched.handle;
        if (stale) {
          // A copy of another checksum (an earlier run's version of this number): it takes no new request.
          if (this.currentHandle === stale) this.currentHandle = handle;
          this.retire(stale);
          log.info({ version, stale: stale.info.sha256, sha256: handle.info.sha256 }, "generator: a held copy of the version had another checksum: replaced");
        }
        this.versions.set(version, handle);
        this.touch(version);
        const loadSeconds = Number(process.hrtime.bigint() - started) / 1e9;
        log.info(
          { version, bytes: fetched.bytes, loadSeconds, engine: handle.engine.name, waiting: pull.waiters, current: this.currentHandle.info.version },
          "generator: pinned policy version pulled on demand (current unchanged)",
        );
      }
      // The waiters' references, taken before anything else runs: eviction skips the version until they are done.
      handle.refs += pull.waiters;
      pull.handle = handle;
      this.evict();
    } finally {
      // In the same turn as the outcome: a request arriving later finds the version held, or starts a new pull.
      this.pulls.delete(`${version}:${sha256}`);
    }
  }

  // ---- eviction ------------------------------------------------------------------------------------------------

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
      const victim = this.loadOrder.find((v) => v !== this.currentHandle.info.version && (this.versions.get(v) as PolicyHandle).refs === 0);
      if (victim === undefined) break;
      this.loadOrder.splice(this.loadOrder.indexOf(victim), 1);
      const handle = this.versions.get(victim) as PolicyHandle;
      this.versions.delete(victim);
      this.retire(handle);
      log.info({ version: victim }, "generator: policy version evicted");
    }
  }

  // ---- closing -------------------------------------------------------------------------------------------------

  /** Takes no new request or load from now on, and stops on-demand pulls. */
  stopTaking(): void {
    this.closed = true;
    this.closing.abort();
  }

  /** After stopTaking() and once no request runs: waits for loads in progress and frees every version. */
  async close(): Promise<void> {
    this.stopTaking();
    await this.loading.catch(() => {});
    for (const handle of this.versions.values()) this.retire(handle);
    this.versions.clear();
    if (this.ownsWeightsDir) rmSync(this.weightsDir, { recursive: true, force: true });
  }
}
