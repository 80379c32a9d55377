/**
 * Dynamic batching: concurrent requests share runs, large requests split, failures stay with their batch.
 * Run: node --import tsx --test test/services/oracle/batcher.test.ts
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Batcher } from "../../../services/oracle/batcher.js";

describe("Batcher", () => {
  it("puts rows of requests submitted together into one run, each request getting its own outputs", async () => {
    const runs: number[][] = [];
    const batcher = new Batcher(async (rows: number[]) => {
      runs.push(rows);
      return rows.map((r) => r * 10);
    }, { maxBatch: 100, maxWaitMs: 0 });
    const [a, b, c] = await Promise.all([batcher.submit([1, 2]), batcher.submit([3]), batcher.submit([4, 5, 6])]);
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
    const out = await batcher.submit([1, 2, 3, 4, 5, 6]);
    assert.deepEqual(out, [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(runs, [[1, 2, 3], [4, 5, 6]]);
    await batcher.close();
  });

  it("queues rows while a run is busy and runs them together when it finishes", async () => {
    const runs: number[][] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const batcher = new Batcher(async (rows: number[]) => {
      runs.push(rows);
      if (runs.length === 1) await gate;
      return rows;
    }, { maxBatch: 10, maxWaitMs: 0, maxConcurrentRuns: 1 });
    const first = batcher.submit([1]);
    await new Promise((r) => setImmediate(r)); // the first run starts
    const later = [batcher.submit([2]), batcher.submit([3, 4])];
    release();
    assert.deepEqual(await first, [1]);
    assert.deepEqual(await Promise.all(later), [[2], [3, 4]]);
    assert.deepEqual(runs, [[1], [2, 3, 4]]);
  });

  it("fails only the requests whose rows were in a failed run", async () => {
    const batcher = new Batcher(async (rows: string[]) => {
      if (rows.includes("boom")) throw new Error("model exploded");
      return rows.map((r) => r.length);
    }, { maxBatch: 2, maxWaitMs: 0 });
    const results = await Promise.allSettled([batcher.submit(["a", "boom"]), batcher.submit(["ccc", "dd"])]);
    assert.equal(results[0].status, "rejected");
    assert.match(String((results[0] as PromiseRejectedResult).reason), /model exploded/);
    assert.deepEqual(results[1], { status: "fulfilled", value: [3, 2] });
  });

  it("rejects a run returning the wrong number of outputs, and refuses work after close", async () => {
    const batcher = new Batcher(async (rows: number[]) => rows.slice(1), { maxBatch: 4, maxWaitMs: 0 });
    await assert.rejects(batcher.submit([1, 2]), /returned 1 outputs for a batch of 2 rows/);
    await batcher.close();
    await assert.rejects(batcher.submit([1]), /closed/);
    assert.throws(() => new Batcher(async (r: number[]) => r, { maxBatch: 0, maxWaitMs: 0 }), /maxBatch: must be a positive integer/);
  });
});
