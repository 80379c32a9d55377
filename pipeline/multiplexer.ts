/**
 * Many concurrent requests over a few long-lived bidi streams: `request(message)` writes into one of `streams`
 * streams (in turn, so that round_robin spreads the streams over the service's replicas) and resolves with the
 * response carrying the same request_id (responses may come back in any order). A stream is retired after
 * `requestsPerStream` requests (half-closed once they are answered; the next request opens a new one), so that
 * replicas that came up after the streams were opened get their share.
 *
 * Faults, each handled here so that no request is lost or answered twice:
 * - A stream fails (its replica died, the connection dropped): its unanswered requests are re-sent on a new stream,
 *   which round_robin places on a replica that is up. With `ready`, the re-send first waits until the service is
 *   reachable again (another replica, or the same one restarted), up to `reconnectTimeoutMs`. A request is re-sent
 *   at most `maxResends` times, so one that kills every replica it reaches does not go round forever.
 * - A response for a request that is no longer pending (a re-send raced the original) is dropped.
 * - RESOURCE_EXHAUSTED (the service is full): asked again after an exponential back-off.
 * - Any other `error` in a response rejects that request with its status; the stream goes on.
 */
import { Code, RpcError } from "../lib/errors.js";
import { isOverload, isTransportFailure } from "../lib/grpc/codes.js";
import { log } from "../lib/log.js";
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
  /** Ends the streams once the pending requests are answered. */
  close(): void;
}

export interface MultiplexerOptions<Req = unknown> {
  /** Name for errors and logs ("generator"). */
  name: string;
  /** Streams kept open; requests go to them in turn. Use at least the number of replicas. @default 1 */
  streams?: number;
  /** Requests sent on one stream before it is retired and a new one opened. @default 256 */
  requestsPerStream?: number;
  /** Resolves once the service is reachable again, rejects after the given time (e.g. `client.waitForReady`). */
  ready?: (deadlineMs: number) => Promise<void>;
  /** How long a re-send waits for `ready`, in ms. @default 300 000 */
  reconnectTimeoutMs?: number;
  /** Times a request is re-sent after its stream broke. @default 3 */
  maxResends?: number;
  /** Times a request answered RESOURCE_EXHAUSTED is asked again. @default 8 */
  maxOverloadRetries?: number;
  /** First back-off after RESOURCE_EXHAUSTED, doubled each time, in ms. @default 50 */
  overloadBackoffMs?: number;
  /**
   * Encoded size of a request, with `maxMessageBytes`: a request over the limit is refused here with
   * INVALID_ARGUMENT (the caller drops that item), since sent it would fail the whole stream and every request on it.
   */
  sizeOf?: (message: Req) => number;
  maxMessageBytes?: number;
}


interface Pending<Req, Res> {
  message: Req;
  resolve: (r: Res) => void;
  reject: (e: unknown) => void;
  /** The stream slot the request goes to. */
  slot: number;
  /** The stream it was last written to. */
  stream?: AsyncQueue<Req>;
  sends: number;
  overloads: number;
  /** Waiting for the service to come back before its re-send. */
  parked: boolean;
}

export function createMultiplexer<Req extends Identified, Res extends WithError>(
  open: (requests: AsyncIterable<Req>) => AsyncIterable<Res>,
  options: MultiplexerOptions<Req>,
): Multiplexer<Req, Res> {
  const streams = Math.max(1, options.streams ?? 1);
  const maxResends = options.maxResends ?? 3;
  const maxOverloadRetries = options.maxOverloadRetries ?? 8;
  const overloadBackoffMs = options.overloadBackoffMs ?? 50;
  const reconnectTimeoutMs = options.reconnectTimeoutMs ?? 300_000;
  const pending = new Map<string, Pending<Req, Res>>();
  /** The open stream of each slot (undefined until first used, and after it failed). */
  const slots: (AsyncQueue<Req> | undefined)[] = new Array(streams).fill(undefined);
  /** Requests written to each slot's open stream. */
  const sent: number[] = new Array(streams).fill(0);
  const requestsPerStream = Math.max(1, options.requestsPerStream ?? 256);
  let turn = 0;
  let closed = false;

  const send = (entry: Pending<Req, Res>) => {
    const queue = slots[entry.slot] ?? connect(entry.slot);
    entry.stream = queue;
    queue.push(entry.message);
    if (++sent[entry.slot] >= requestsPerStream) {
      // Retire it: it ends once its requests are answered; the slot's next request opens a new stream.
      slots[entry.slot] = undefined;
      queue.end();
    }
  };

  const connect = (slot: number): AsyncQueue<Req> => {
    const requests = new AsyncQueue<Req>();
    slots[slot] = requests;
    sent[slot] = 0;
    void (async () => {
      try {
        for await (const response of open(requests)) {
          const entry = pending.get(response.requestId);
          if (!entry) continue; // answered already (a re-send raced the original)
          if (response.error && isOverload(response.error.code) && entry.overloads < maxOverloadRetries && !closed) {
            // The service is full: ask again later, with exponential back-off.
            const delayMs = overloadBackoffMs * 2 ** entry.overloads++;
            setTimeout(() => {
              if (pending.get(response.requestId) === entry) send(entry);
            }, delayMs).unref();
            continue;
          }
          pending.delete(response.requestId);
          if (response.error && response.error.code !== Code.OK) entry.reject(RpcError.fromStatus(response.error, `${options.name}: request ${response.requestId}`));
          else entry.resolve(response);
        }
        if (slots[slot] === requests) slots[slot] = undefined;
        // A stream that ended with requests unanswered broke its contract: re-send them.
        const unanswered = [...pending.values()].filter((e) => e.stream === requests).length;
        if (unanswered > 0) void resend(requests, new RpcError(Code.INTERNAL, `${options.name}: the stream ended with ${unanswered} requests unanswered`));
      } catch (err) {
        if (slots[slot] === requests) slots[slot] = undefined;
        void resend(requests, err);
      }
    })();
    return requests;
  };

  /** Re-sends the requests of the failed stream, once the service is reachable again. */
  const resend = async (stream: AsyncQueue<Req>, cause: unknown) => {
    const rpc = RpcError.from(cause);
    const orphans = [...pending.values()].filter((e) => e.stream === stream && !e.parked);
    if (orphans.length === 0) return;
    const give = (entry: Pending<Req, Res>, error: unknown) => {
      if (pending.get(entry.message.requestId) !== entry) return;
      pending.delete(entry.message.requestId);
      entry.reject(error);
    };
    const retry = orphans.filter((entry) => {
      // Only a broken transport is worth a re-send, not a refusal of the request.
      if (!isTransportFailure(rpc.code) || entry.sends > maxResends || closed) {
        give(entry, rpc);
        return false;
      }
      return true;
    });
    if (retry.length === 0) return;
    log.warn({ stream: options.name, requests: retry.length, err: rpc.message }, "stream broke: re-sending its requests");
    for (const entry of retry) entry.parked = true;
    if (options.ready) {
      try {
        await options.ready(reconnectTimeoutMs);
      } catch (err) {
        const why = new RpcError(rpc.code, `${options.name}: the stream broke (${rpc.message}) and the service was not back within ${reconnectTimeoutMs} ms: ${(err as Error).message}`);
        for (const entry of retry) give(entry, why);
        return;
      }
    }
    for (const entry of retry) {
      entry.parked = false;
      if (pending.get(entry.message.requestId) !== entry) continue;
      entry.sends++;
      send(entry);
    }
  };

  return {
    request(message) {
      if (closed) return Promise.reject(new RpcError(Code.FAILED_PRECONDITION, `${options.name}: the stream is closed`));
      if (pending.has(message.requestId)) return Promise.reject(new RpcError(Code.INVALID_ARGUMENT, `${options.name}: duplicate request_id ${message.requestId}`));
      if (options.sizeOf && options.maxMessageBytes !== undefined) {
        const bytes = options.sizeOf(message);
        if (bytes > options.maxMessageBytes) {
          return Promise.reject(
            new RpcError(Code.INVALID_ARGUMENT, `${options.name}: request ${message.requestId} is ${bytes} bytes, over the message limit of ${options.maxMessageBytes} (client.maxMessageBytes)`),
          );
        }
      }
      return new Promise<Res>((resolve, reject) => {
        const entry = { message, resolve, reject, slot: turn++ % streams, sends: 1, overloads: 0, parked: false };
        pending.set(message.requestId, entry);
        send(entry);
      });
    },
    close() {
      closed = true;
      for (const queue of slots) queue?.end();
    },
  };
}
