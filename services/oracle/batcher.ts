/**
 * Dynamic batching: rows submitted by concurrent requests are gathered into one model run.
 *
 * A batch runs when it holds `maxBatch` rows, or when its oldest row has waited `maxWaitMs`, or — while
 * `maxConcurrentRuns` runs are busy — as soon as a run finishes (rows that arrived meanwhile have already waited).
 * A request larger than `maxBatch` is split across runs. Each request gets its own rows' outputs back in order; a
 * failed run fails every request with rows in it, and only those.
 */
import { Code, RpcError } from "../../lib/errors.js";

export interface BatcherOptions {
  /** Rows per run. */
  maxBatch: number;
  /** Longest wait of the first queued row before its batch runs, in ms; 0 runs on the next event-loop turn. */
  maxWaitMs: number;
  /** Runs in flight at once. @default 1 */
  maxConcurrentRuns?: number;
}

export interface BatcherStats {
  /** Model runs made. */
  runs: number;
  /** Rows run. */
  rows: number;
  /** Largest batch run. */
  largestBatch: number;
}

interface Pending<Out> {
  outputs: Out[];
  remaining: number;
  failed: boolean;
  resolve: (outputs: Out[]) => void;
  reject: (err: unknown) => void;
}

interface QueuedRow<Row, Out> {
  row: Row;
  index: number;
  owner: Pending<Out>;
}

export class Batcher<Row, Out> {
  private readonly queue: QueuedRow<Row, Out>[] = [];
  private readonly maxConcurrentRuns: number;
  private inFlight = 0;
  private timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  private closed = false;
  private idle: (() => void) | undefined;
  readonly stats: BatcherStats = { runs: 0, rows: 0, largestBatch: 0 };

  /** `run` maps a batch of rows to one output per row, in order. */
  constructor(
    private readonly run: (rows: Row[]) => Promise<Out[]>,
    private readonly options: BatcherOptions,
  ) {
    if (!Number.isInteger(options.maxBatch) || options.maxBatch < 1) throw new TypeError(`maxBatch: must be a positive integer, got ${options.maxBatch}`);
    if (!(options.maxWaitMs >= 0)) throw new TypeError(`maxWaitMs: must be ≥ 0, got ${options.maxWaitMs}`);
    this.maxConcurrentRuns = options.maxConcurrentRuns ?? 1;
    if (!Number.isInteger(this.maxConcurrentRuns) || this.maxConcurrentRuns < 1) {
      throw new TypeError(`maxConcurrentRuns: must be a positive integer, got ${this.maxConcurrentRuns}`);
    }
  }

  /** Queues `rows`; resolves with their outputs in order once every row has run. */
  submit(rows: readonly Row[]): Promise<Out[]> {
    if (this.closed) return Promise.reject(new RpcError(Code.UNAVAILABLE, "the batcher is closed"));
    if (rows.length === 0) return Promise.resolve([]);
    return new Promise<Out[]>((resolve, reject) => {
      const owner: Pending<Out> = { outputs: new Array<Out>(rows.length), remaining: rows.length, failed: false, resolve, reject };
      for (const [index, row] of rows.entries()) this.queue.push({ row, index, owner });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.queue.length === 0 || this.inFlight >= this.maxConcurrentRuns) return;
    if (this.queue.length >= this.options.maxBatch) {
      this.cancelTimer();
      this.flush();
      return;
    }
    if (this.timer !== undefined) return;
    const fire = () => {
      this.timer = undefined;
      if (this.inFlight < this.maxConcurrentRuns) this.flush();
    };
    this.timer = this.options.maxWaitMs === 0 ? setImmediate(fire) : setTimeout(fire, this.options.maxWaitMs);
  }

  private cancelTimer(): void {
    if (this.timer === undefined) return;
    clearTimeout(this.timer as NodeJS.Timeout);
    clearImmediate(this.timer as NodeJS.Immediate);
    this.timer = undefined;
  }

  private flush(): void {
    while (this.queue.length > 0 && this.inFlight < this.maxConcurrentRuns) {
      const batch = this.queue.splice(0, this.options.maxBatch);
      this.inFlight++;
      this.stats.runs++;
      this.stats.rows += batch.length;
      this.stats.largestBatch = Math.max(this.stats.largestBatch, batch.length);
      this.execute(batch).finally(() => {
        this.inFlight--;
        // Rows that queued while the run was busy have waited long enough: run them now.
        if (this.queue.length > 0) {
          this.cancelTimer();
          this.flush();
        } else if (this.inFlight === 0) this.idle?.();
      });
    }
  }

  private async execute(batch: QueuedRow<Row, Out>[]): Promise<void> {
    let outputs: Out[];
    try {
      outputs = await this.run(batch.map((q) => q.row));
      if (outputs.length !== batch.length) {
        throw new RpcError(Code.INTERNAL, `the model returned ${outputs.length} outputs for a batch of ${batch.length} rows`);
      }
    } catch (err) {
      for (const { owner } of batch) {
        if (owner.failed) continue;
        owner.failed = true;
        owner.reject(err);
      }
      return;
    }
    for (const [k, { owner, index }] of batch.entries()) {
      if (owner.failed) continue;
      owner.outputs[index] = outputs[k];
      if (--owner.remaining === 0) owner.resolve(owner.outputs);
    }
  }

  /** Refuses new rows, fails queued ones with UNAVAILABLE and waits for the runs in flight. */
  async close(): Promise<void> {
    this.closed = true;
    this.cancelTimer();
    for (const { owner } of this.queue.splice(0)) {
      if (owner.failed) continue;
      owner.failed = true;
      owner.reject(new RpcError(Code.UNAVAILABLE, "the oracle is shutting down"));
    }
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.idle = resolve));
  }
}
