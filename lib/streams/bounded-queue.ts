/**
 * A bounded, single-consumer AsyncIterable fed by producers that wait for room: `await queue.push(x)` resolves
 * once x is queued and the queue holds at most `capacity` items. Used where a push-based source (RxJS) feeds a
 * pull-based sink (a gRPC request stream) without letting memory grow with the input.
 */
import { Code, RpcError } from "../errors.js";
export class BoundedQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private readonly room: (() => void)[] = [];
  private waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  private ended = false;
  private failure: { error: unknown } | undefined;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new TypeError(`capacity must be a positive integer, got ${capacity}`);
  }

  get size(): number {
    return this.items.length;
  }

  /** Queues `item`, waiting while the queue is full. Rejects once the queue has ended or failed. */
  async push(item: T): Promise<void> {
    while (this.items.length >= this.capacity && !this.ended) await new Promise<void>((resolve) => this.room.push(resolve));
    if (this.ended) throw new RpcError(Code.INTERNAL, "BoundedQueue: push after end");
    if (this.waiting) {
      const { resolve } = this.waiting;
      this.waiting = undefined;
      resolve({ value: item, done: false });
    } else this.items.push(item);
  }

  /** No more items: the consumer finishes after the queued ones. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.wakeProducers();
    if (this.waiting && this.items.length === 0) {
      const { resolve } = this.waiting;
      this.waiting = undefined;
      resolve({ value: undefined, done: true });
    }
  }

  /** Ends with an error, thrown to the consumer after the queued items. */
  fail(error: unknown): void {
    if (this.ended) return;
    this.failure = { error };
    this.end();
    if (this.waiting) {
      const { reject } = this.waiting;
      this.waiting = undefined;
      reject(error);
    }
  }

  private wakeProducers(): void {
    for (const wake of this.room.splice(0)) wake();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.items.length > 0) {
          const value = this.items.shift() as T;
          this.room.shift()?.();
          return Promise.resolve({ value, done: false });
        }
        if (this.failure) return Promise.reject(this.failure.error);
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => {
          this.waiting = { resolve, reject };
        });
      },
      return: () => {
        this.items.length = 0;
        this.end();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
