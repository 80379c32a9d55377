/**
 * Many concurrent requests over a few long-lived bidi streams (the loop's Generate, Score and Compare streams, the
 * remote oracle's Compare stream): `request(message)` writes into one of `streams` streams (in turn, so that
 * round_robin spreads the streams over the service's replicas) and resolves with the response carrying the same
 * request_id (responses may come back in any order). A stream is retired after `requestsPerStream` requests
 * (half-closed; it ends once its requests are answered and the slot's next request opens a new one), so that
 * replicas that came up after the streams were opened get their share.
 *
 * Faults, each handled here so that no request is lost or answered twice:
 * - A stream fails (its replica died, the connection dropped): its unanswered requests are re-sent on a new stream,
 *   which round_robin places on a replica that is up. With `ready`, the re-send first waits until the service is
 *   reachable again (another replica, or the same one restarted), up to `reconnectTimeoutMs`.
 * - A request unanswered after `requestTimeoutMs` (a replica that hangs with its connection open) is re-sent on
 *   another stream, preferably one that answered lately, so that it can reach another replica; its stream takes no
 *   new requests and is cancelled once nothing sent on it is still waiting.
 * - Both kinds of re-send count against `maxResends`, so a request that kills or hangs every replica it reaches
 *   does not go round forever: it then fails with the stream's status, or DEADLINE_EXCEEDED.
 * - A response for a request that is no longer pending (a re-send raced the original) is dropped: the first answer
 *   wins.
 * - RESOURCE_EXHAUSTED (the service is full): asked again after an exponential back-off.
 * - A request over `maxMessageBytes` is refused before it is sent, with INVALID_ARGUMENT (bad input the caller
 *   drops): sent, it would fail the whole stream and every request on it.
 * - Any other `error` in a response rejects that request with its status; the stream goes on.
 */
import { Code, RpcError } from "../errors.js";
import { log } from "../log.js";
import { AsyncQueue } from "../streams/async-queue.js";
import { isOverload, isTransportFailure } from "./codes.js";

/** A request: its id is echoed by the response. */
export interface Identified {
  requestId: string;
}

/** A response: the request's id, and a per-request status when that request failed. */
export interface Answer {
  requestId: string;
  error?: { code: number; message: string; field: string };
}

/** Opens one bidi stream (e.g. `(requests, signal) => client.compare(requests, { signal })`); `signal` cancels it. */
export type OpenStream<Req, Res> = (requests: AsyncIterable<Req>, signal: AbortSignal) => AsyncIterable<Res>;

export interface Multiplexer<Req extends Identified, Res extends Answer> {
  request(message: Req): Promise<Res>;
  /** Takes no new requests; the streams end once the pending requests are answered (any still open after
   * `closeGraceMs` with nothing pending, e.g. on a hung replica, are cancelled). */
  close(): void;
  /** Rejects every pending request with `reason` and cancels every stream. */
  abort(reason: RpcError): void;
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
  /** How long a re-send after a broken stream waits for `ready`, in ms. @default 300 000 */
  reconnectTimeoutMs?: number;
  /** A request unanswered this long after it was sent is re-sent on another stream, in ms; 0 = no deadline. @default 0 */
  requestTimeoutMs?: number;
  /** Times a request is re-sent (its stream broke, or it timed out). @default 3 */
  maxResends?: number;
  /** Times a request answered RESOURCE_EXHAUSTED is asked again. @default 8 */
  maxOverloadRetries?: number;
  /** First back-off after RESOURCE_EXHAUSTED, doubled each time, in ms. @default 50 */
  overloadBackoffMs?: number;
  /** After `close()`, how long streams may stay open once nothing is pending before they are cancelled, in ms. @default 1 000 */
  closeGraceMs?: number;
  /** Encoded size of a request, with `maxMessageBytes`: a request over the limit is refused with INVALID_ARGUMENT. */
  sizeOf?: (message: Req) => number;
  maxMessageBytes?: number;
}

interface Stream<Req> {
  slot: number;
  requests: AsyncQueue<Req>;
  cancel: AbortController;
  /** Requests written to it. */
  sent: number;
  /** Ids of the requests whose latest send is on this stream and that are not answered yet. */
  outstanding: Set<string>;
  /** Takes no new requests (count reached, timed out, closing, or its response side finished). */
  retired: boolean;
  /** A request on it timed out: it is cancelled once `outstanding` is empty. */
  suspect: boolean;
  /** When it last delivered an answer (performance.now()), -Infinity before its first. */
  lastAnswerMs: number;
}

interface Pending<Req, Res> {
  message: Req;
  resolve: (r: Res) => void;
  reject: (e: unknown) => void;
  /** The stream slot the request goes to next. */
  slot: number;
  /** The stream its latest send is on (none while it waits for a back-off or for the service). */
  stream?: Stream<Req>;
  sends: number;
  overloads: number;
  /** Waiting for the service to come back before its re-send. */
  parked: boolean;
  timer?: NodeJS.Timeout;
}

export function createMultiplexer<Req extends Identified, Res extends Answer>(open: OpenStream<Req, Res>, options: MultiplexerOptions<Req>): Multiplexer<Req, Res> {
  const { name } = options;
  const streamCount = Math.max(1, options.streams ?? 1);
  const requestsPerStream = Math.max(1, options.requestsPerStream ?? 256);
  const maxResends = options.maxResends ?? 3;
  const maxOverloadRetries = options.maxOverloadRetries ?? 8;
  const overloadBackoffMs = options.overloadBackoffMs ?? 50;
  const reconnectTimeoutMs = options.reconnectTimeoutMs ?? 300_000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 0;
  const closeGraceMs = options.closeGraceMs ?? 1_000;
  const pending = new Map<string, Pending<Req, Res>>();
  /** The open stream of each slot (undefined until first used, and after it was retired). */
  const slots: (Stream<Req> | undefined)[] = new Array(streamCount).fill(undefined);
  /** Streams whose response side has not finished. */
  const live = new Set<Stream<Req>>();
  let turn = 0;
  let closed = false;
  let graceTimer: NodeJS.Timeout | undefined;

  const retire = (stream: Stream<Req>) => {
    if (stream.retired) return;
    stream.retired = true;
    if (slots[stream.slot] === stream) slots[stream.slot] = undefined;
    stream.requests.end();
  };

  /** Takes the request off its stream (and its deadline off the clock). */
  const detach = (entry: Pending<Req, Res>) => {
    clearTimeout(entry.timer);
    entry.timer = undefined;
    const stream = entry.stream;
    if (!stream) return;
    entry.stream = undefined;
    stream.outstanding.delete(entry.message.requestId);
    if (stream.suspect && stream.outstanding.size === 0) stream.cancel.abort();
  };

  /** Once closed and nothing is pending, streams still open after the grace period are cancelled. */
  const windDown = () => {
    if (!closed || pending.size > 0 || live.size === 0 || graceTimer) return;
    graceTimer = setTimeout(() => {
      for (const stream of live) stream.cancel.abort();
    }, closeGraceMs);
    graceTimer.unref();
  };

  const settle = (entry: Pending<Req, Res>) => {
    pending.delete(entry.message.requestId);
    detach(entry);
    windDown();
  };

  const give = (entry: Pending<Req, Res>, error: unknown) => {
    if (pending.get(entry.message.requestId) !== entry) return;
    settle(entry);
    entry.reject(error);
  };

  /** Another slot for a re-send: the one whose open stream answered most lately, else the next one. */
  const otherSlot = (slot: number): number => {
    let best = (slot + 1) % streamCount;
    let bestMs = Number.NEGATIVE_INFINITY;
    for (let s = 0; s < streamCount; s++) {
      const stream = slots[s];
      if (s === slot || !stream || stream.lastAnswerMs <= bestMs) continue;
      best = s;
      bestMs = stream.lastAnswerMs;
    }
    return best;
  };

  const send = (entry: Pending<Req, Res>) => {
    detach(entry);
    const stream = slots[entry.slot] ?? connect(entry.slot);
    entry.stream = stream;
    stream.outstanding.add(entry.message.requestId);
    stream.requests.push(entry.message);
    if (++stream.sent >= requestsPerStream) retire(stream);
    if (requestTimeoutMs > 0) entry.timer = setTimeout(() => timedOut(entry, stream), requestTimeoutMs);
  };

  const timedOut = (entry: Pending<Req, Res>, stream: Stream<Req>) => {
    const id = entry.message.requestId;
    if (pending.get(id) !== entry || entry.stream !== stream) return;
    entry.timer = undefined;
    // Whatever holds this request may hold the stream's others too: send it nothing more.
    stream.suspect = true;
    retire(stream);
    if (entry.sends > maxResends || closed) {
      give(entry, new RpcError(Code.DEADLINE_EXCEEDED, `${name}: request ${id} had no answer within ${requestTimeoutMs} ms, ${entry.sends} times`));
      return;
    }
    log.warn({ stream: name, request: id, timeoutMs: requestTimeoutMs, sends: entry.sends }, "request unanswered in time: re-sending it on another stream");
    entry.sends++;
    entry.slot = otherSlot(entry.slot);
    send(entry);
  };

  const answer = (stream: Stream<Req>, response: Res) => {
    stream.lastAnswerMs = performance.now();
    const id = response.requestId;
    const entry = pending.get(id);
    if (!entry) return; // answered already (a re-send raced the original)
    if (response.error && isOverload(response.error.code)) {
      if (entry.stream !== stream) return; // a refusal of an earlier send: the latest one is still out
      if (entry.overloads < maxOverloadRetries && !closed) {
        // The service is full: ask again later, with exponential back-off.
        detach(entry);
        const delayMs = overloadBackoffMs * 2 ** entry.overloads++;
        setTimeout(() => {
          if (pending.get(id) === entry && !entry.stream) send(entry);
        }, delayMs);
        return;
      }
    }
    settle(entry);
    if (response.error && response.error.code !== Code.OK) entry.reject(RpcError.fromStatus(response.error, `${name}: request ${id}`));
    else entry.resolve(response);
  };

  const connect = (slot: number): Stream<Req> => {
    const stream: Stream<Req> = {
      slot,
      requests: new AsyncQueue<Req>(),
      cancel: new AbortController(),
      sent: 0,
      outstanding: new Set(),
      retired: false,
      suspect: false,
      lastAnswerMs: Number.NEGATIVE_INFINITY,
    };
    slots[slot] = stream;
    live.add(stream);
    void (async () => {
      let failure: unknown;
      try {
        for await (const response of open(stream.requests, stream.cancel.signal)) answer(stream, response);
      } catch (err) {
        failure = err;
      }
      live.delete(stream);
      retire(stream);
      // A stream that ended with requests unanswered broke its contract: re-send them as after a failure.
      if (failure === undefined && stream.outstanding.size > 0) {
        failure = new RpcError(Code.INTERNAL, `${name}: the stream ended with ${stream.outstanding.size} requests unanswered`);
      }
      if (failure !== undefined) void resend(stream, failure);
    })();
    return stream;
  };

  /** Re-sends the requests of the failed stream, once the service is reachable again. */
  const resend = async (stream: Stream<Req>, cause: unknown) => {
    const rpc = RpcError.from(cause);
    const orphans = [...stream.outstanding].flatMap((id) => {
      const entry = pending.get(id);
      return entry && entry.stream === stream && !entry.parked ? [entry] : [];
    });
    if (orphans.length === 0) return;
    const retry = orphans.filter((entry) => {
      // Only a broken transport is worth a re-send, not a refusal of the request.
      if (!isTransportFailure(rpc.code) || entry.sends > maxResends || closed) {
        give(entry, rpc);
        return false;
      }
      return true;
    });
    if (retry.length === 0) return;
    log.warn({ stream: name, requests: retry.length, err: rpc.message }, "stream broke: re-sending its requests");
    for (const entry of retry) {
      detach(entry);
      entry.parked = true;
    }
    if (options.ready) {
      try {
        await options.ready(reconnectTimeoutMs);
      } catch (err) {
        const why = new RpcError(rpc.code, `${name}: the stream broke (${rpc.message}) and the service was not back within ${reconnectTimeoutMs} ms: ${(err as Error).message}`);
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
      if (closed) return Promise.reject(new RpcError(Code.FAILED_PRECONDITION, `${name}: the stream is closed`));
      if (pending.has(message.requestId)) return Promise.reject(new RpcError(Code.INVALID_ARGUMENT, `${name}: duplicate request_id ${message.requestId}`));
      if (options.sizeOf && options.maxMessageBytes !== undefined) {
        const bytes = options.sizeOf(message);
        if (bytes > options.maxMessageBytes) {
          return Promise.reject(
            new RpcError(Code.INVALID_ARGUMENT, `${name}: request ${message.requestId} is ${bytes} bytes, over the message limit of ${options.maxMessageBytes} (client.maxMessageBytes)`),
          );
        }
      }
      return new Promise<Res>((resolve, reject) => {
        const entry: Pending<Req, Res> = { message, resolve, reject, slot: turn++ % streamCount, sends: 1, overloads: 0, parked: false };
        pending.set(message.requestId, entry);
        send(entry);
      });
    },
    close() {
      closed = true;
      for (const stream of slots) if (stream) retire(stream);
      windDown();
    },
    abort(reason) {
      closed = true;
      for (const entry of [...pending.values()]) give(entry, reason);
      for (const stream of live) {
        retire(stream);
        stream.cancel.abort();
      }
    },
  };
}
