/**
 * One error class for the whole project: a gRPC status code, a message that names what was wrong and where, and
 * the cause kept for logs. Services throw it; the gRPC layer turns it into the call's status. Unknown throws become
 * UNKNOWN with their message (the cause is logged, not sent).
 */
import { status } from "@grpc/grpc-js";

export const Code = status;
export type Code = status;

export class RpcError extends Error {
  override name = "RpcError";
  constructor(
    readonly code: Code,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** Wraps anything thrown into an RpcError; RpcErrors and grpc-js ServiceErrors keep their code. */
  static from(err: unknown, fallback: Code = Code.UNKNOWN): RpcError {
    if (err instanceof RpcError) return err;
    const maybe = err as { code?: unknown; details?: unknown; message?: unknown };
    if (err instanceof Error && typeof maybe.code === "number" && maybe.code in Code) {
      return new RpcError(maybe.code as Code, typeof maybe.details === "string" ? maybe.details : err.message, { cause: err });
    }
    return new RpcError(fallback, err instanceof Error ? err.message : String(err), { cause: err });
  }
}

/** INVALID_ARGUMENT naming the offending field. */
export function invalidArgument(field: string, reason: string): RpcError {
  return new RpcError(Code.INVALID_ARGUMENT, `${field}: ${reason}`);
}

/**
 * An expected failure to report to a person in one line (a missing file, a run that cannot be resumed): the CLI
 * prints its message without a stack.
 */
export function userError(message: string): Error & { userFacing: true } {
  return Object.assign(new Error(message), { userFacing: true as const });
}
