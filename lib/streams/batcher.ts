/**
 * Dynamic batching with an admission limit: jobs submitted by concurrent requests are gathered into shared model
 * runs. The generator (services/generator/scheduler.ts) and the ONNX oracles (services/oracle/) both batch through it,
 * each supplying its own rule of which jobs may share a run.
 *
 * - Admission: at most `maxQueued` jobs wait at once; one beyond is refused with RESOURCE_EXHAUSTED (AdmissionLimit).
 * - Batches: a run takes the oldest job and every queued job `compatible` with it, oldest first, up to `maxBatch`
 *   rows (`rowsOf`); a job never spans runs (a caller with more rows than maxBatch submits them as several jobs).
 * - Waiting for batch-mates: runs start on the next event-loop turn at the earliest, so jobs submitted together batch
 *   together. The oldest job then waits up to `maxWaitMs` after it was queued while its batch is not full, unless it
 *   does not wait (`waitsForMates`) or it was queued while every run was busy (it has waited already).
 * - Concurrency: at most `maxConcurrentRuns` runs at once; the rest queue up and batch meanwhile.
 * - Outcomes: each job gets its own output; a failed run fails its jobs, and only those. A job whose caller's signal
 *   aborts while it waits leaves the queue (CANCELLED); a running one finishes (a model run cannot be interrupted).
 */
import { Code, RpcError } from "../errors.js";
import { AdmissionLimit } from "./admission.js";

export interface BatcherOptions<Job> {
  /** Rows per run. */
  maxBatch: number;
  /** Longest wait of the oldest job for batch-mates, in ms; 0 runs on the next event-loop turn. */
  maxWaitMs: number;
  /** Runs in flight at once. @default 1 */
  maxConcurrentRuns?: number;
  /** Jobs waiting at once; beyond it a submit is refused with RESOURCE_EXHAUSTED. @default Infinity */
  maxQueued?: number;
  /** Who batches, first in error messages ("generator", "oracle"). @default "batcher" */
  name?: string;
  /** The setting maxQueued comes from, named when a job is refused. @default "maxQueued" */
  maxQueuedSetting?: string;
  /** Rows a job takes in a run (at most maxBatch). @default 1 */
  rowsOf?(job: Job): number;
  /** Whether `job` may share the run of `first`, the oldest job of the batch. @default always */
  compatible?(first: Job, job: Job): boolean;
  /** Whether `job`, when oldest, waits up to maxWaitMs for batch-mates (false: it runs with those already queued). @default always */
  waitsForMates?(job: Job): boolean;
}

export interface BatcherStats {
  /** Model runs made. */
  runs: number;
  /** Rows run. */
  rows: number;
  /** Largest batch run, in rows. */
  largestBatch: number;
}

interface Queued<Job, Out> {
  job: Job;
  rows: number;
  /** performance.now() when queued. */
  queuedAt: number;
  resolve(out: Out): void;
  reject(err: unknown): void;
}

export class Batcher<Job, Out> {
  private readonly queue: Queued<Job, Out>[] = [];
  private readonly admission: AdmissionLimit;
  private readonly maxConcurrentRuns: number;
  private readonly name: string;
  private running = 0;
  /** Jobs queued at or before this time have waited for a busy run: they wait no longer. */
  private waitedUntil = Number.NEGATIVE_INFINITY;
  private pending: { timer: NodeJS.Timeout | NodeJS.Immediate; immediate: boolean } | undefined;
  private closed = false;
  private idle: (() => void) | undefined;
  readonly stats: BatcherStats = { runs: 0, rows: 0, largestBatch: 0 };

  /** `run` maps a batch of jobs to one output per job, in order. */
  constructor(
    private readonly run: (jobs: Job[]) => Promise<Out[]>,
    private readonly options: BatcherOptions<Job>,
  ) {
    if (!Number.isInteger(options.maxBatch) || options.maxBatch < 1) throw new TypeError(`maxBatch: must be a positive integer, got ${options.maxBatch}`);
    if (!(options.maxWaitMs >= 0)) throw new TypeError(`maxWaitMs: must be ≥ 0, got ${options.maxWaitMs}`);
    this.maxConcurrentRuns = options.maxConcurrentRuns ?? 1;
    if (!Number.isInteger(this.maxConcurrentRuns) || this.maxConcurrentRuns < 1) {
      throw new TypeError(`maxConcurrentRuns: must be a positive integer, got ${this.maxConcurrentRuns}`);
    }
    this.name = options.name ?? "batcher";
    this.admission = new AdmissionLimit({ limit: options.maxQueued ?? Number.POSITIVE_INFINITY, name: this.name, setting: options.maxQueuedSetting ?? "maxQueued" });
  }

  /** Jobs waiting for a run (not counting the ones running). */
  get queued(): number {
    return this.queue.length;
  }

  /**
   * Queues `job`; resolves with its output once its run is done. Rejects with RESOURCE_EXHAUSTED when maxQueued jobs
   * wait, UNAVAILABLE once closed, CANCELLED when `signal` aborts while the job still waits.
   */
  submit(job: Job, signal?: AbortSignal): Promise<Out> {
    if (this.closed) return Promise.reject(this.shuttingDown());
    if (signal?.aborted) return Promise.reject(this.cancelled());
    const rows = this.options.rowsOf?.(job) ?? 1;
    if (!(rows >= 1 && rows <= this.options.maxBatch)) return Promise.reject(new RpcError(Code.INTERNAL, `${this.name}: a job of ${rows} rows cannot run in batches of ${this.options.maxBatch}`));
    try {
      this.admission.take();
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<Out>((resolve, reject) => {
      const onAbort = () => {
        const i = this.queue.indexOf(entry);
        if (i === -1) return;
        this.queue.splice(i, 1);
        this.admission.release();
        reject(this.cancelled());
      };
      const settled = () => signal?.removeEventListener("abort", onAbort);
      const entry: Queued<Job, Out> = {
        job,
        rows,
        queuedAt: performance.now(),
        resolve: (out) => {
          settled();
          resolve(out);
        },
        reject: (err) => {
          settled();
          reject(err);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.queue.push(entry);
      this.schedule(0);
    });
  }

  /** Submits every job; resolves with their outputs in order, or rejects with the first failure. */
  submitAll(jobs: readonly Job[], signal?: AbortSignal): Promise<Out[]> {
    return Promise.all(jobs.map((job) => this.submit(job, signal)));
  }

  private shuttingDown(): RpcError {
    return new RpcError(Code.UNAVAILABLE, `${this.name}: shutting down`);
  }

  private cancelled(): RpcError {
    return new RpcError(Code.CANCELLED, `${this.name}: the call was cancelled`);
  }

  /** Pumps after `delayMs` (0: the next turn); an earlier pump already pending wins. */
  private schedule(delayMs: number): void {
    if (this.pending) {
      if (this.pending.immediate || delayMs > 0) return;
      clearTimeout(this.pending.timer as NodeJS.Timeout);
    }
    const fire = () => {
      this.pending = undefined;
      this.pump();
    };
    // At the earliest the next turn: jobs submitted together batch together, and I/O gets in between runs.
    this.pending = delayMs > 0 ? { timer: setTimeout(fire, delayMs), immediate: false } : { timer: setImmediate(fire), immediate: true };
  }

  private cancelPending(): void {
    if (!this.pending) return;
    if (this.pending.immediate) clearImmediate(this.pending.timer as NodeJS.Immediate);
    else clearTimeout(this.pending.timer as NodeJS.Timeout);
    this.pending = undefined;
  }

  private compatible(first: Job, job: Job): boolean {
    return this.options.compatible?.(first, job) ?? true;
  }

  /** How much longer the oldest job waits for batch-mates (0: run it now). */
  private waitFor(first: Queued<Job, Out>): number {
    if (this.options.maxWaitMs === 0 || first.queuedAt <= this.waitedUntil || this.options.waitsForMates?.(first.job) === false) return 0;
    const left = first.queuedAt + this.options.maxWaitMs - performance.now();
    if (left <= 0) return 0;
    let rows = 0;
    for (const q of this.queue) if (q === first || this.compatible(first.job, q.job)) rows += q.rows;
    return rows >= this.options.maxBatch ? 0 : left;
  }

  private pump(): void {
    while (this.running < this.maxConcurrentRuns && this.queue.length > 0) {
      const wait = this.waitFor(this.queue[0]);
      if (wait > 0) {
        this.schedule(wait);
        return;
      }
      const batch = this.takeBatch();
      this.running++;
      void this.execute(batch).finally(() => {
        this.running--;
        // Jobs that queued while the runs were busy have waited long enough.
        this.waitedUntil = performance.now();
        if (this.queue.length > 0) this.schedule(0);
        else if (this.running === 0) this.idle?.();
      });
    }
  }

  /** The oldest job and every queued job that may share its run, up to maxBatch rows, removed from the queue. */
  private takeBatch(): Queued<Job, Out>[] {
    const first = this.queue.shift() as Queued<Job, Out>;
    const batch = [first];
    let rows = first.rows;
    for (let i = 0; i < this.queue.length && rows < this.options.maxBatch; ) {
      const q = this.queue[i];
      if (rows + q.rows <= this.options.maxBatch && this.compatible(first.job, q.job)) {
        batch.push(q);
        rows += q.rows;
        this.queue.splice(i, 1);
      } else i++;
    }
    for (let i = 0; i < batch.length; i++) this.admission.release();
    this.stats.runs++;
    this.stats.rows += rows;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, rows);
    return batch;
  }

  private async execute(batch: Queued<Job, Out>[]): Promise<void> {
    let outputs: Out[];
    try {
      outputs = await this.run(batch.map((q) => q.job));
      if (outputs.length !== batch.length) {
        throw new RpcError(Code.INTERNAL, `${this.name}: the run returned ${outputs.length} outputs for a batch of ${batch.length} jobs`);
      }
    } catch (err) {
      for (const q of batch) q.reject(err);
      return;
    }
    for (const [i, q] of batch.entries()) q.resolve(outputs[i]);
  }

  /** Refuses new jobs, fails queued ones with UNAVAILABLE and waits for the runs in flight. */
  async close(): Promise<void> {
    this.closed = true;
    this.cancelPending();
    const failure = this.shuttingDown();
    for (const q of this.queue.splice(0)) {
      this.admission.release();
      q.reject(failure);
    }
    if (this.running > 0) await new Promise<void>((resolve) => (this.idle = resolve));
  }
}
