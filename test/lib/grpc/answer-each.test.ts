/**
 * answerEach (lib/grpc/answer-each.ts), the server side of every request/response bidi stream: answers out of order,
 * back-pressure at maxInFlight, cancellation, a broken request stream, a throwing answer.
 * Run: node --import tsx --test test/lib/grpc/answer-each.test.ts
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { answerEach } from "../../../lib/grpc/answer-each.js";
import { AsyncQueue } from "../../../lib/streams/async-queue.js";

/** An answer that resolves when the test says so, by request. */
class HeldAnswers {
  readonly started: number[] = [];
  private readonly open = new Map<number, () => void>();
  private changed: (() => void) | undefined;

  answer = (request: number): Promise<string> => {
    this.started.push(request);
    this.changed?.();
    return new Promise((resolve) => this.open.set(request, () => resolve(`answer ${request}`)));
  };

  release(request: number): void {
    this.open.get(request)?.();
  }

  /** Resolves once `n` answers have started. */
  async untilStarted(n: number): Promise<void> {
    while (this.started.length < n) await new Promise<void>((r) => (this.changed = r));
  }
}

const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

describe("answerEach", () => {
  it("yields answers as they finish, reads no further than maxInFlight pending answers, and ends after the last", async () => {
    const requests = new AsyncQueue<number>();
    for (const r of [1, 2, 3, 4]) requests.push(r);
    requests.end();
    const held = new HeldAnswers();
    const out = answerEach(requests, { signal: new AbortController().signal }, 2, held.answer)[Symbol.asyncIterator]();
    const first = out.next();
    await held.untilStarted(2);
    await turns(5);
    assert.deepEqual(held.started, [1, 2], "reading pauses at two pending answers");
    held.release(2);
    assert.deepEqual(await first, { value: "answer 2", done: false });
    await held.untilStarted(3);
    held.release(3);
    held.release(1);
    assert.deepEqual((await out.next()).value, "answer 3");
    assert.deepEqual((await out.next()).value, "answer 1");
    await held.untilStarted(4);
    held.release(4);
    assert.deepEqual((await out.next()).value, "answer 4");
    assert.deepEqual(await out.next(), { value: undefined, done: true });
  });

  it("ends at once when the call is cancelled and stops reading the requests", async () => {
    let returned = false;
    const requests = new AsyncQueue<number>();
    requests.push(1);
    const iterable: AsyncIterable<number> = {
      [Symbol.asyncIterator]: () => {
        const inner = requests[Symbol.asyncIterator]();
        return {
          next: () => inner.next(),
          return: () => {
            returned = true;
            return inner.return?.() ?? Promise.resolve({ value: undefined, done: true });
          },
        };
      },
    };
    const abort = new AbortController();
    const held = new HeldAnswers();
    const out = answerEach(iterable, abort, 8, held.answer)[Symbol.asyncIterator]();
    const next = out.next();
    await held.untilStarted(1);
    abort.abort();
    assert.deepEqual(await next, { value: undefined, done: true });
    assert.equal(returned, true);
  });

  it("ends with the request stream's error, after the answers already made", async () => {
    const requests = new AsyncQueue<number>();
    requests.push(1);
    const out = answerEach(requests, { signal: new AbortController().signal }, 8, async (n) => `answer ${n}`)[Symbol.asyncIterator]();
    assert.deepEqual(await out.next(), { value: "answer 1", done: false });
    requests.fail(new Error("stream broke"));
    await assert.rejects(out.next(), /stream broke/);
  });

  it("ends the call with the error of an answer that throws instead of hanging", async () => {
    const requests = new AsyncQueue<number>();
    requests.push(1);
    requests.push(2);
    requests.end();
    await assert.rejects(
      (async () => {
        for await (const _ of answerEach(requests, { signal: new AbortController().signal }, 8, async (n) => {
          if (n === 2) throw new Error("a bug in answer");
          return n;
        })) {
          // drain
        }
      })(),
      /a bug in answer/,
    );
  });
});
