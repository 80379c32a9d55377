/**
 * An admission limit: at most `limit` requests hold a place at once, and one beyond it is refused at once with
 * RESOURCE_EXHAUSTED naming the setting, so overload never grows memory or latency without bound. The caller decides
 * what holding a place means (waiting in a queue, or waiting and running).
 */
import { Code, RpcError } from "../errors.js";

export interface AdmissionLimitOptions {
  /** Places; Infinity: no limit. */
  limit: number;
  /** Who refuses, first in the message ("generator", "oracle"). */
  name: string;
  /** The setting `limit` comes from, named in the message ("generator.maxQueuedRequests"). */
  setting: string;
}

export class AdmissionLimit {
  private taken = 0;

  constructor(private readonly options: AdmissionLimitOptions) {
    if (!(options.limit >= 1)) throw new TypeError(`${options.setting}: must be ≥ 1, got ${options.limit}`);
  }

  /** Places held now. */
  get held(): number {
    return this.taken;
  }

  /** Takes a place; throws RESOURCE_EXHAUSTED (taking nothing) when all are held. Give it back with `release()`. */
  take(): void {
    if (this.taken >= this.options.limit) {
      throw new RpcError(Code.RESOURCE_EXHAUSTED, `${this.options.name}: ${this.taken} requests are already queued (${this.options.setting}); retry later`);
    }
    this.taken++;
  }

  release(): void {
    if (this.taken > 0) this.taken--;
  }
}
