/**
 * The generator's failures (RpcErrors) and how one becomes the `error` of a response: bad requests name their field
 * (`FieldError`), and the stream goes on.
 */
import { create } from "@bufbuild/protobuf";
import { type Status, StatusSchema } from "../../gen/sppo/v1/common_pb.js";
import { Code, RpcError } from "../../lib/errors.js";
import { log } from "../../lib/log.js";

/** A request that failed a check: the field at fault and why. */
export class FieldError extends RpcError {
  constructor(
    code: Code,
    readonly field: string,
    reason: string,
  ) {
    super(code, `${field}: ${reason}`);
  }
}

/** INVALID_ARGUMENT on `field`. */
export const invalid = (field: string, reason: string) => new FieldError(Code.INVALID_ARGUMENT, field, reason);
/** The caller went away before its request ran. */
export const cancelled = () => new RpcError(Code.CANCELLED, "generator: the call was cancelled");
/** The generator is closing. */
export const shuttingDown = () => new RpcError(Code.UNAVAILABLE, "generator: shutting down");

/** A failure as the sppo.v1.Status of a response. Unexpected throws are logged and become INTERNAL. */
export function statusOf(err: unknown, requestId: string): Status {
  const rpc = RpcError.from(err, Code.INTERNAL);
  if (!(err instanceof RpcError)) log.error({ err, requestId }, "generator: request failed unexpectedly");
  return create(StatusSchema, { code: rpc.code, message: rpc.message, field: err instanceof FieldError ? err.field : "" });
}
