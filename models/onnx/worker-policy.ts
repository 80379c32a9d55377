/**
 * An OrtPolicy in a worker thread. onnxruntime-node's `session.run` and session creation execute synchronously on
 * the calling thread (the run's promise only defers the call with setImmediate), so on the main thread a long run
 * blocks the event loop: at GPT-2-small scale a prefill of 32 rows runs for seconds (tens of seconds on a loaded
 * machine), long enough for gRPC keepalive pings to go unanswered and for peers to drop every stream of the process.
 * A service (the generator) runs its policy here instead: the main thread only posts prompts and gets results, the
 * sampling loop and the sessions live in the worker. Weights come from a model directory the worker opens itself
 * (mapped as external data, so the weights are in the process once whichever thread maps them). Every policy of the
 * process shares one worker thread (policy-worker.ts), so loading a new version does not start a thread.
 *
 *   const policy = await createWorkerPolicy("runs/v3", { prepare: ["sample", "score"] });
 *   const [r] = await policy.sample([[0, 5, 9]], { maxNewTokens: 32, seed: 1 });
 *   await policy.refresh("runs/v4");
 *   await policy.dispose();
 */
import { Worker } from "node:worker_threads";
import { Code, RpcError } from "../../lib/errors.js";
import type { TokenPair } from "../batch.js";
import type { ModelConfig } from "../config.js";
import type { SampleOptions, SampleResult } from "../sample.js";
import type { Score } from "../score.js";
import type { OrtPolicyOptions, RefreshTiming, ScoreOptions } from "./policy.js";
import type { PolicyReply, PolicyRequest, WorkerError } from "./policy-worker.js";

type Call = PolicyRequest extends infer R ? (R extends { id: number; policy: number } ? Omit<R, "id" | "policy"> : never) : never;

/** Rebuilds a worker's error on this side: its class (RangeError, TypeError, RpcError with its code) and message. */
function reviveError(e: WorkerError): Error {
  if (e.code !== undefined) return new RpcError(e.code as Code, e.message, { kind: e.kind });
  if (e.name === "RangeError") return new RangeError(e.message);
  if (e.name === "TypeError") return new TypeError(e.message);
  return new RpcError(Code.INTERNAL, `policy worker: ${e.message}`);
}

/**
 * The worker thread every WorkerPolicy of this process shares (starting one costs seconds: a thread, tsx, the
 * modules), started by the first policy and stopped when the last is disposed.
 */
class PolicyHost {
  private static shared: PolicyHost | undefined;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private nextPolicy = 0;
  private users = 0;
  private failure: Error | undefined;

  private constructor(private readonly worker: Worker) {
    worker.on("message", (reply: PolicyReply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if ("error" in reply) p.reject(reviveError(reply.error));
      else p.resolve(reply.ok);
    });
    const fail = (err: Error) => {
      this.failure = err;
      if (PolicyHost.shared === this) PolicyHost.shared = undefined; // the next policy starts a fresh worker
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on("error", (err) => fail(new RpcError(Code.INTERNAL, `policy worker: ${err.message}`, { cause: err })));
    worker.on("exit", (code) => fail(new RpcError(Code.UNAVAILABLE, `the policy worker thread exited (code ${code})`)));
  }

  /** The shared host, with one more user; pair with `release`. Returns the policy id the user is to use. */
  static acquire(): { host: PolicyHost; policy: number } {
    PolicyHost.shared ??= new PolicyHost(new Worker(new URL("./policy-worker.mjs", import.meta.url)));
    const host = PolicyHost.shared;
    host.users++;
    return { host, policy: host.nextPolicy++ };
  }

  /** One user fewer; the last one stops the thread. */
  async release(): Promise<void> {
    if (--this.users > 0) return;
    if (PolicyHost.shared === this) PolicyHost.shared = undefined;
    this.worker.removeAllListeners("exit");
    await this.worker.terminate();
  }

  call(policy: number, request: Call): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...request, id, policy });
    });
  }
}

/** The OrtPolicy surface a service uses, served from the worker thread. Create with `createWorkerPolicy`. */
export class WorkerPolicy {
  readonly name = "onnxruntime" as const;
  private disposed = false;

  private constructor(
    private readonly host: PolicyHost,
    private readonly id: number,
    private current: { config: ModelConfig; parameters: number },
  ) {}

  /** Builds the policy's sessions in the worker thread (see `createWorkerPolicy`). */
  static async create(dir: string, options: OrtPolicyOptions = {}): Promise<WorkerPolicy> {
    const { host, policy } = PolicyHost.acquire();
    try {
      const created = (await host.call(policy, { op: "create", dir, options })) as { config: ModelConfig; parameters: number };
      return new WorkerPolicy(host, policy, created);
    } catch (err) {
      await host.release();
      throw err;
    }
  }

  /** The architecture of the current weights. */
  get config(): ModelConfig {
    return this.current.config;
  }

  /** Number of parameters (a tied head counted once). */
  get parameters(): number {
    return this.current.parameters;
  }

  private check(what: string): void {
    if (this.disposed) throw new RpcError(Code.INTERNAL, `WorkerPolicy: ${what} after dispose()`);
  }

  /** As OrtPolicy.sample, run in the worker. */
  async sample(prompts: number[][], options: SampleOptions = {}): Promise<SampleResult[]> {
    this.check("sample()");
    return (await this.host.call(this.id, { op: "sample", prompts, options })) as SampleResult[];
  }

  /** As OrtPolicy.score, run in the worker. */
  async score(pairs: TokenPair[], options: ScoreOptions = {}): Promise<Score[]> {
    this.check("score()");
    return (await this.host.call(this.id, { op: "score", pairs, options })) as Score[];
  }

  /** As OrtPolicy.refresh, from a model directory. */
  async refresh(dir: string): Promise<RefreshTiming> {
    this.check("refresh()");
    const { config, parameters, ...timing } = (await this.host.call(this.id, { op: "refresh", dir })) as RefreshTiming & { config: ModelConfig; parameters: number };
    this.current = { config, parameters };
    return timing;
  }

  /** Releases the sessions (after the calls in flight end); the last policy also stops the thread. Idempotent. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    try {
      await this.host.call(this.id, { op: "dispose" });
    } finally {
      await this.host.release();
    }
  }
}

/**
 * An onnxruntime policy over the model directory `dir`, run in a worker thread (the event loop stays free while it
 * samples and scores). Options as `createOrtPolicy`; the tokenizer is not built (the caller reads its own).
 * Throws as `createOrtPolicy` does (a "model-format" RpcError for a bad directory, TypeError for bad options).
 */
export function createWorkerPolicy(dir: string, options: OrtPolicyOptions = {}): Promise<WorkerPolicy> {
  return WorkerPolicy.create(dir, options);
}
