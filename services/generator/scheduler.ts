/**
 * The generator's batch scheduler: every accepted request becomes one job in one queue bounded by
 * `maxQueuedRequests` (beyond it: RESOURCE_EXHAUSTED, never unbounded memory). Up to `maxConcurrentRuns` engine runs
 * go at once; a run takes the oldest job and every queued job that can share its batch, up to `maxBatch` rows:
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
 */
import { randomInt } from "node:crypto";
import type { GeneratorConfig } from "../../lib/config/generator.js";
import { Code, RpcError } from "../../lib/errors.js";
import { log } from "../../lib/log.js";
import type { EngineSample, EngineSampleOptions, EngineScore, PolicyEngine, ScorePair } from "./engine.js";
import { cancelled, shuttingDown } from "./errors.js";

/** What a job needs of its policy version. */
export interface RunVersion {
  engine: PolicyEngine;
  padId: number;
}

type Job =
  | {
      kind: "sample";
      handle: RunVersion;
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
  | { kind: "score"; handle: RunVersion; pairs: ScorePair[]; enqueuedAt: number; resolve(scores: EngineScore[]): void; reject(err: unknown): void };

/** A sampling job as submitted. */
export type SampleJob = Omit<Extract<Job, { kind: "sample" }>, "kind" | "enqueuedAt" | "resolve" | "reject">;

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

export type SchedulerConfig = Pick<GeneratorConfig, "maxQueuedRequests" | "maxConcurrentRuns" | "maxBatch" | "maxWaitMs">;

/** The bounded queue of engine jobs and the runs it feeds (see the file header). */
export class BatchScheduler {
  private readonly queue: Job[] = [];
  private running = 0;
  private pumpScheduled = false;
  private closed = false;

  constructor(private readonly config: SchedulerConfig) {}

  /** Requests waiting for the engine (not counting the ones running). */
  get queued(): number {
    return this.queue.length;
  }

  /** Samples `job.k` rows of `job.prompt`; CANCELLED when `signal` aborts while the job still waits. */
  sample(job: SampleJob, signal: AbortSignal | undefined): Promise<EngineSample[]> {
    return this.enqueue<EngineSample[]>(signal, (resolve, reject) => ({ kind: "sample", ...job, enqueuedAt: performance.now(), resolve, reject }));
  }

  /** Scores `pairs` on `handle`; CANCELLED when `signal` aborts while the job still waits. */
  score(handle: RunVersion, pairs: ScorePair[], signal: AbortSignal | undefined): Promise<EngineScore[]> {
    return this.enqueue<EngineScore[]>(signal, (resolve, reject) => ({ kind: "score", handle, pairs, enqueuedAt: performance.now(), resolve, reject }));
  }

  private enqueue<T>(signal: AbortSignal | undefined, make: (resolve: (value: T) => void, reject: (err: unknown) => void) => Job): Promise<T> {
    if (this.closed) return Promise.reject(shuttingDown());
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

  /** Fails queued jobs with UNAVAILABLE, refuses new ones, and waits for the runs going on. */
  async close(): Promise<void> {
    this.closed = true;
    const failure = shuttingDown();
    for (const job of this.queue.splice(0)) job.reject(failure);
    while (this.running > 0) await new Promise((r) => setImmediate(r));
  }
}
