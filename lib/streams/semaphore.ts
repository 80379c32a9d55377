/** Counting semaphore: at most `permits` holders at once; `acquire()` waits for a permit, `release()` returns one. */
export class Semaphore {
  private readonly waiters: (() => void)[] = [];

  constructor(private permits: number) {
    if (!Number.isInteger(permits) || permits < 1) throw new TypeError(`permits must be a positive integer, got ${permits}`);
  }

  async acquire(): Promise<void> {
    if (this.permits > 0) {
      this.permits--;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.permits++;
  }
}
