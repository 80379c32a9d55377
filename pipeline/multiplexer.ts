/**
 * Many concurrent requests over one long-lived bidi stream: `request(message)` writes into the stream and resolves
 * with the response carrying the same request_id (responses may come back in any order). If the stream fails,
 * every pending request is re-sent once on a new stream (the service config already retried UNAVAILABLE at
 * connection time); a request answered RESOURCE_EXHAUSTED (the service is full) is asked again after an exponential
 * back-off; a request whose response carries another `error` rejects with that status, and the stream goes on.
 */
import { Code, RpcError } from "../lib/errors.js";
import { AsyncQueue } from "../lib/streams/async-queue.js";

interface Identified {
  requestId: string;
}

interface WithError {
  requestId: string;
  error?: { code: number; message: string; field: string };
}

export interface Multiplexer<Req extends Identified, Res extends WithError> {
  request(message: Req): Promise<Res>;
  /** Ends the stream once the pending requests are answered. */
  close(): void;
}

export interface MultiplexerOptions {
  /** Name for errors ("generator"). */
  name: string;
  /** Times a request is re-sent after its stream broke. @default 2 */
  maxResends?: number;
  /** Times a request answered RESOURCE_EXHAUSTED is asked again. @default 8 */
  maxOverloadRetries?: number;
  /** First back-off after RESOURCE_EXHAUSTED, doubled each time, in ms. @default 50 */
  overloadBackoffMs?: number;
}

export function createMultiplexer<Req extends Identified, Res extends WithError>(
  open: (requests: AsyncIterable<Req>) => AsyncIterable<Res>,
  options: MultiplexerOptions,
): Multiplexer<Req, Res> {
  const maxResends = options.maxResends ?? 2;
  const maxOverloadRetries = options.maxOverloadRetries ?? 8;
  const overloadBackoffMs = options.overloadBackoffMs ?? 50;
  const pending = new Map<string, { message: Req; resolve: (r: Res) => void; reject: (e: unknown) => void; sends: number; overloads: number }>();
  let queue: AsyncQueue<Req> | undefined;
  let closed = false;

  const connect = (): AsyncQueue<Req> => {
    const requests = new AsyncQueue<Req>();
    queue = requests;
    void (async () => {
      try {
        for await (const response of open(requests)) {
          const entry = pending.get(response.requestId);
          if (!entry) continue; // answered already (a re-send raced the original)
          if (response.error?.code === Code.RESOURCE_EXHAUSTED && entry.overloads < maxOverloadRetries && !closed) {
            // The service is full: ask again later, with exponential back-off.
            const delayMs = overloadBackoffMs * 2 ** entry.overloads++;
            setTimeout(() => {
              if (pending.get(response.requestId) === entry) (queue ?? connect()).push(entry.message);
            }, delayMs).unref();
            continue;
          }
          pending.delete(response.requestId);
          if (response.error && response.error.code !== Code.OK) {
            const field = response.error.field ? ` (field ${response.error.field})` : "";
            entry.reject(new RpcError(response.error.code as Code, `${options.name}: request ${response.requestId}${field}: ${response.error.message}`));
          } else entry.resolve(response);
        }
        if (queue === requests) queue = undefined;
        // A stream that ended with requests unanswered broke its contract: re-send them.
        if (pending.size > 0) resendAll(new RpcError(Code.INTERNAL, `${options.name}: the stream ended with ${pending.size} requests unanswered`));
      } catch (err) {
        if (queue === requests) queue = undefined;
        resendAll(err);
      }
    })();
    return requests;
  };

  const resendAll = (cause: unknown) => {
    const rpc = RpcError.from(cause);
    const retryable = rpc.code === Code.UNAVAILABLE || rpc.code === Code.INTERNAL || rpc.code === Code.UNKNOWN || rpc.code === Code.CANCELLED;
    for (const [id, entry] of pending) {
      if (!retryable || entry.sends > maxResends || closed) {
        pending.delete(id);
        entry.reject(rpc);
      }
    }
    if (pending.size === 0) return;
    const requests = connect();
    for (const entry of pending.values()) {
      entry.sends++;
      requests.push(entry.message);
    }
  };

  return {
    request(message) {
      if (closed) return Promise.reject(new RpcError(Code.FAILED_PRECONDITION, `${options.name}: the stream is closed`));
      if (pending.has(message.requestId)) return Promise.reject(new RpcError(Code.INVALID_ARGUMENT, `${options.name}: duplicate request_id ${message.requestId}`));
      return new Promise<Res>((resolve, reject) => {
        pending.set(message.requestId, { message, resolve, reject, sends: 1, overloads: 0 });
        (queue ?? connect()).push(message);
      });
    },
    close() {
      closed = true;
      queue?.end();
    },
  };
}
