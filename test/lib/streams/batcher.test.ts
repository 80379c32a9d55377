/**
 * The shared Batcher (lib/streams/batcher.ts): jobs submitted together share runs, compatibility and row limits shape
 * batches, waiting for batch-mates, the admission limit, cancellation, failures staying with their batch, closing.
 * Run: node --import tsx --test test/lib/streams/batcher.test.ts
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, RpcError } from "../../../lib/errors.js";
import { AdmissionLimit } from "../../../lib/streams/admission.js";
import { Batcher } from "../../../lib/streams/batcher.js";

/** A promise and its resolver, to hold a run until the test lets it go. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

const isCode = (code: Code, message: RegExp) => (err: unknown) => err instanceof RpcError && err.code === code && message.test(err.message);

describe("Batcher", () => {
  it("puts jobs submitted together into one run, each getting its own output", async () => {
    const runs: number[][] = [];
    const batcher = new Batcher(async (rows: number[]) => {
      runs.push(rows);
      return rows.map((r) => r * 10);
    }, { maxBatch: 100, maxWaitMs: 0 });
    const [a, b, c] = await Promise.all([batcher.submitAll([1, 2]), batcher.submitAll([3]), batcher.submitAll([4, 5, 6])]);
    assert.deepEqual(a, [10, 20]);
    assert.deepEqual(b, [30]);
    assert.deepEqual(c, [40, 50, 60]);
    assert.deepEqual(runs, [[1, 2, 3, 4, 5, 6]]);
    assert.deepEqual(batcher.stats, { runs: 1, rows: 6, largestBatch: 6 });
  });

  it("splits at maxBatch and runs a full batch without waiting for the timer", async () => {
    const runs: number[][] = [];
    // maxWaitMs is far longer than the test may take: only full batches and run completions can trigger runs.
    const batcher = new Batcher(async (rows: number[]) => {
      runs.push(rows);
      return rows;
    }, { maxBatch: 3, maxWaitMs: 60_000, maxConcurrentRuns: 1 });
    const out = await batcher.submitAll([1, 2, 3, 4, 5, 6]);
    assert.deepEqual(out, [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(runs, [[1, 2, 3], [4, 5, 6]]);
    await batcher.close();
  });

  it("queues jobs while a run is busy and runs them together when it finishes, without waiting further", async () => {
    const runs: number[][] = [];
    const held = gate();
    const batcher = new Batcher(async (rows: number[]) => {
      runs.push(rows);
      if (runs.length === 1) await held.wait;
      return rows;
    }, { maxBatch: 10, maxWaitMs: 60_000, maxConcurrentRuns: 1, waitsForMates: (row) => row !== 1 });
    const first = batcher.submit(1);
    await new Promise((r) => setImmediate(r)); // the first run starts (job 1 does not wait)
    const later = [batcher.submit(2), batcher.submitAll([3, 4])];
    held.open();
    assert.equal(await first, 1);
    assert.deepEqual(await Promise.all(later), [2, [3, 4]]);
    assert.deepEqual(runs, [[1], [2, 3, 4]]);
  });

  it("batches only jobs compatible with the oldest, up to maxBatch rows, keeping a job's rows together", async () => {
    type Job = { group: string; rows: number };
    const runs: string[][] = [];
    const batcher = new Batcher(
      async (jobs: Job[]) => {
        runs.push(jobs.map((j) => `${j.group}${j.rows}`));
        return jobs.map((j) => j.rows);
      },
      { maxBatch: 4, maxWaitMs: 0, rowsOf: (j) => j.rows, compatible: (a, b) => a.group === b.group },
    );
    const jobs: Job[] = [
      { group: "a", rows: 2 },
      { group: "b", rows: 1 },
      { group: "a", rows: 3 },
      { group: "a", rows: 1 },
      { group: "b", rows: 3 },
    ];
    await Promise.all(jobs.map((j) => batcher.submit(j)));
    assert.deepEqual(runs, [["a2", "a1"], ["b1", "b3"], ["a3"]]);
    await assert.rejects(batcher.submit({ group: "a", rows: 5 }), isCode(Code.INTERNAL, /5 rows cannot run in batches of 4/));
  });

  it("lets the oldest job wait up to maxWaitMs for batch-mates while its batch is not full", async () => {
    const runs: number[][] = [];
    const batcher = new Batcher(async (rows: number[]) => {
      runs.push(rows);
      return rows;
    }, { maxBatch: 3, maxWaitMs: 60_000 });
    const first = batcher.submit(1);
    // Several turns go by: the job still waits for batch-mates (its batch is not full).
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(runs, []);
    assert.equal(batcher.queued, 1);
    // Two more fill the batch: it runs at once.
    await Promise.all([first, batcher.submit(2), batcher.submit(3)]);
    assert.deepEqual(runs, [[1, 2, 3]]);
  });

  it("refuses jobs beyond maxQueued with RESOURCE_EXHAUSTED naming the setting, and takes them again once there is room", async () => {
    const held = gate();
    const batcher = new Batcher(async (rows: number[]) => {
      await held.wait;
      return rows;
    }, { maxBatch: 1, maxWaitMs: 0, maxQueued: 2, name: "generator", maxQueuedSetting: "generator.maxQueuedRequests" });
    const running = batcher.submit(0);
    await new Promise((r) => setImmediate(r)); // job 0 runs: it no longer counts as queued
    const queued = [batcher.submit(1), batcher.submit(2)];
    await assert.rejects(batcher.submit(3), isCode(Code.RESOURCE_EXHAUSTED, /^generator: 2 requests are already queued \(generator\.maxQueuedRequests\); retry later$/));
    held.open();
    assert.deepEqual(await Promise.all([running, ...queued]), [0, 1, 2]);
    assert.equal(await batcher.submit(4), 4);
  });

  it("drops a waiting job whose signal aborts (CANCELLED) and lets a running one finish", async () => {
    const held = gate();
    const ran: number[] = [];
    const batcher = new Batcher(async (rows: number[]) => {
      ran.push(...rows);
      await held.wait;
      return rows;
    }, { maxBatch: 1, maxWaitMs: 0, maxQueued: 1, name: "oracle" });
    const abortRunning = new AbortController();
    const abortWaiting = new AbortController();
    const running = batcher.submit(1, abortRunning.signal);
    await new Promise((r) => setImmediate(r));
    const waiting = batcher.submit(2, abortWaiting.signal);
    abortRunning.abort();
    abortWaiting.abort();
    await assert.rejects(waiting, isCode(Code.CANCELLED, /^oracle: the call was cancelled$/));
    assert.equal(batcher.queued, 0);
    // The aborted job's place is free again.
    const next = batcher.submit(3);
    held.open();
    assert.equal(await running, 1);
    assert.equal(await next, 3);
    assert.deepEqual(ran, [1, 3]);
    await assert.rejects(batcher.submit(4, AbortSignal.abort()), isCode(Code.CANCELLED, /cancelled/));
  });

  it("fails only the jobs that were in a failed run", async () => {
    const batcher = new Batcher(async (rows: string[]) => {
      if (rows.includes("boom")) throw new Error("model exploded");
      return rows.map((r) => r.length);
    }, { maxBatch: 2, maxWaitMs: 0 });
    const results = await Promise.allSettled([batcher.submitAll(["a", "boom"]), batcher.submitAll(["ccc", "dd"])]);
    assert.equal(results[0].status, "rejected");
    assert.match(String((results[0] as PromiseRejectedResult).reason), /model exploded/);
    assert.deepEqual(results[1], { status: "fulfilled", value: [3, 2] });
  });

  it("rejects a run returning the wrong number of outputs; close fails queued jobs, waits for the running one, refuses new ones", async () => {
    const short = new Batcher(async (rows: number[]) => rows.slice(1), { maxBatch: 4, maxWaitMs: 0 });
    await assert.rejects(short.submitAll([1, 2]), /returned 1 outputs for a batch of 2 jobs/);
    assert.throws(() => new Batcher(async (r: number[]) => r, { maxBatch: 0, maxWaitMs: 0 }), /maxBatch: must be a positive integer/);

    const held = gate();
    const batcher = new Batcher(async (rows: number[]) => {
      await held.wait;
      return rows;
    }, { maxBatch: 1, maxWaitMs: 0, name: "oracle" });
    const running = batcher.submit(1);
    await new Promise((r) => setImmediate(r));
    const queued = batcher.submit(2);
    let closed = false;
    const closing = batcher.close().then(() => (closed = true));
    await assert.rejects(queued, isCode(Code.UNAVAILABLE, /^oracle: shutting down$/));
    await new Promise((r) => setImmediate(r));
    assert.equal(closed, false, "close waits for the running job");
    held.open();
    assert.equal(await running, 1);
    await closing;
    await assert.rejects(batcher.submit(3), isCode(Code.UNAVAILABLE, /shutting down/));
  });
});

describe("AdmissionLimit", () => {
  it("holds at most `limit` places and names its setting when full", () => {
    const limit = new AdmissionLimit({ limit: 2, name: "oracle", setting: "oracle.maxQueuedRequests" });
    limit.take();
    limit.take();
    assert.equal(limit.held, 2);
    assert.throws(() => limit.take(), isCode(Code.RESOURCE_EXHAUSTED, /^oracle: 2 requests are already queued \(oracle\.maxQueuedRequests\); retry later$/));
    limit.release();
    limit.take();
    assert.equal(limit.held, 2);
    assert.throws(() => new AdmissionLimit({ limit: 0, name: "x", setting: "x.limit" }), /x\.limit: must be ≥ 1/);
  });
});
