/** BoundedQueue and Semaphore. Run: node --import tsx --test test/lib/streams/streams.test.ts */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BoundedQueue } from "../../../lib/streams/bounded-queue.js";
import { Semaphore } from "../../../lib/streams/semaphore.js";

describe("lib/streams", () => {
  it("BoundedQueue makes producers wait for room and delivers in order", async () => {
    const queue = new BoundedQueue<number>(2);
    const pushed: number[] = [];
    const producer = (async () => {
      for (let i = 0; i < 5; i++) {
        await queue.push(i);
        pushed.push(i);
        assert.ok(queue.size <= 2, `size ${queue.size} exceeds capacity`);
      }
      queue.end();
    })();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(pushed, [0, 1], "the third push waits while two items are queued");
    const got: number[] = [];
    for await (const v of queue) got.push(v);
    await producer;
    assert.deepEqual(got, [0, 1, 2, 3, 4]);
  });

  it("BoundedQueue passes a failure to the consumer after the queued items", async () => {
    const queue = new BoundedQueue<string>(4);
    await queue.push("a");
    queue.fail(new Error("upstream broke"));
    const got: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const v of queue) got.push(v);
      })(),
      /upstream broke/,
    );
    assert.deepEqual(got, ["a"]);
    await assert.rejects(queue.push("late"), /push after end/);
  });

  it("Semaphore admits at most N holders", async () => {
    const sem = new Semaphore(2);
    let held = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        await sem.acquire();
        held++;
        peak = Math.max(peak, held);
        await new Promise((r) => setImmediate(r));
        held--;
        sem.release();
      }),
    );
    assert.equal(peak, 2);
    assert.throws(() => new Semaphore(0), /positive integer/);
  });
});
