/**
 * The generator's failures and how one becomes the `error` of a response: bad requests name their field (an RpcError
 * with `field`, lib/errors.ts), and the stream goes on.
 */
import type { Status } from "../../gen/sppo/v1/common_pb.js";
import { Code, invalidArgument, RpcError, statusOf as toStatus } from "../../lib/errors.js";
import { log } from "../../lib/log.js";

/** INVALID_ARGUMENT on `field`. */
export const invalid = invalidArgument;
/** The caller went away before its request ran. */
export const cancelled = () => new RpcError(Code.CANCELLED, "generator: the call was cancelled");
/** The generator is closing. */
export const shuttingDown = () => new RpcError(Code.UNAVAILABLE, "generator: shutting down");

/** A failure as the sppo.v1.Status of a response. Unexpected throws are logged and become INTERNAL. */
export function statusOf(err: unknown, requestId: string): Status {
  if (!(err instanceof RpcError)) log.error({ err, requestId }, "generator: request failed unexpectedly");
  return toStatus(err);
}
