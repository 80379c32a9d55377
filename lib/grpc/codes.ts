/**
 * What a gRPC status code means to the caller that receives it — the one home of every retry, re-send, skip and
 * report decision (STYLE.md: only retryable codes are retried). Each rule names the codes it covers:
 *
 * | rule                 | codes                                       | what the caller does                                |
 * | -------------------- | ------------------------------------------- | --------------------------------------------------- |
 * | `isRetryable`        | UNAVAILABLE                                 | any call: wait until the service is ready, call again |
 * | `isTransportFailure` | UNAVAILABLE, CANCELLED, INTERNAL, UNKNOWN   | an idempotent request is sent again (elsewhere), a broken stream opened again |
 * | `isConflict`         | ABORTED                                     | another writer holds the resource: try again later  |
 * | `isOverload`         | RESOURCE_EXHAUSTED                          | the service is full: back off, ask again            |
 * | `isItemRefusal`      | INVALID_ARGUMENT, OUT_OF_RANGE              | the item itself is unusable: drop and report it, go on |
 * | `isFault`            | UNKNOWN, INTERNAL                           | a bug or a broken invariant: keep the stack         |
 *
 * Any other code (FAILED_PRECONDITION, NOT_FOUND, DATA_LOSS, ...) ends what the caller was doing, with its message.
 * Tests: test/lib/grpc/codes.test.ts.
 */
import { status as Code } from "@grpc/grpc-js";

/**
 * UNAVAILABLE: the service did not take the call (down, restarting, draining). gRPC guarantees the request was not
 * processed, so any call may be made again once the service is ready.
 */
export function isRetryable(code: number): boolean {
  return code === Code.UNAVAILABLE;
}

/**
 * The connection or the peer broke, not the request: UNAVAILABLE, CANCELLED (the stream was torn down), INTERNAL
 * (e.g. a reset stream or an unparsable frame) and UNKNOWN (the peer died mid-call). The request may have been
 * processed, so only idempotent work (sampling, scoring, comparing with a seed) is sent again.
 */
export function isTransportFailure(code: number): boolean {
  return code === Code.UNAVAILABLE || code === Code.CANCELLED || code === Code.INTERNAL || code === Code.UNKNOWN;
}

/** ABORTED: a concurrency conflict (e.g. the optimizer's previous Train stream is still being wound down). */
export function isConflict(code: number): boolean {
  return code === Code.ABORTED;
}

/** RESOURCE_EXHAUSTED: the service's queue is full; ask again after a back-off. */
export function isOverload(code: number): boolean {
  return code === Code.RESOURCE_EXHAUSTED;
}

/**
 * A refusal of one item (INVALID_ARGUMENT, OUT_OF_RANGE): the prompt, candidate or example was unusable, so the
 * pipeline drops and reports it instead of ending the run. Anything else still ends the stream, since going on would
 * hide a fault.
 */
export function isItemRefusal(code: number): boolean {
  return code === Code.INVALID_ARGUMENT || code === Code.OUT_OF_RANGE;
}

/** UNKNOWN or INTERNAL: an unexpected throw or a broken invariant, where the stack is what helps (not the user). */
export function isFault(code: number): boolean {
  return code === Code.UNKNOWN || code === Code.INTERNAL;
}
