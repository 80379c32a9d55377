/**
 * The one error class of the project (STYLE.md "Errors and bad input"; modelled on connect-es's ConnectError): a
 * fixed gRPC status code (never a code of our own), a message that names what was wrong and where, the cause kept for
 * logs, and optionally the request field at fault and the kind of input it is about.
 *
 * - Services throw it; the gRPC layer turns it into the call's status, and a stream that answers each request turns
 *   it into the response's `sppo.v1.Status` (`statusOf`; `RpcError.fromStatus` reads one back).
 * - Unknown throws become UNKNOWN (or the caller's fallback) with their message; the cause is logged, never sent.
 * - The CLI prints an error a person can act on (`userFacing`: every code but UNKNOWN and INTERNAL) as one line,
 *   without a stack; a bug keeps its stack.
 * - Callers that tell errors apart beyond their code (the trainer skips a damaged checkpoint for an older one) test
 *   `RpcError.is(err, kind)`; which codes to retry, re-send or skip is lib/grpc/codes.ts.
 */
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { type Status, StatusSchema } from "../gen/sppo/v1/common_pb.js";
import { isFault } from "./grpc/codes.js";

export const Code = status;
export type Code = status;

/**
 * The kinds of bad input that callers tell apart, each with its fixed code. An error of a kind is made with
 * `kindError(kind, message)`.
 */
export const ERROR_KINDS = {
  /** A configuration file, SPPO_* variable or flag that cannot be read or does not fit the schema. */
  config: Code.INVALID_ARGUMENT,
  /** A command line a script cannot use (the script prints its usage after the message). */
  usage: Code.INVALID_ARGUMENT,
  /** A prompt file or row that cannot be used (pipeline/prompts.ts). */
  "prompt-data": Code.INVALID_ARGUMENT,
  /** A preference-game file for `sppo nash` (lib/sppo/nash.ts). */
  "game-file": Code.INVALID_ARGUMENT,
  /** A model file or directory that is malformed, truncated, mismatched or of an unsupported kind (models/). */
  "model-format": Code.FAILED_PRECONDITION,
  /** A checkpoint that is missing, unreadable or does not match its manifest (services/optimizer/checkpoint.ts). */
  checkpoint: Code.DATA_LOSS,
  /** A file name from outside (a manifest, a peer) that would lead out of its directory (lib/paths.ts). */
  "unsafe-path": Code.DATA_LOSS,
} as const satisfies Record<string, Code>;

export type ErrorKind = keyof typeof ERROR_KINDS;

export interface RpcErrorOptions {
  /** What was thrown underneath, for logs (never sent to a peer). */
  cause?: unknown;
  /** The request field at fault, as a dotted path ("candidates[2]"); it travels in `sppo.v1.Status.field`. */
  field?: string;
  /** The kind of bad input (see ERROR_KINDS), for callers that tell errors apart. */
  kind?: ErrorKind;
}

export class RpcError extends Error {
  override name = "RpcError";
  /** The request field at fault, when there is one. */
  readonly field: string | undefined;
  /** The kind of bad input, when the error is about one (see ERROR_KINDS). */
  readonly kind: ErrorKind | undefined;

  constructor(
    readonly code: Code,
    message: string,
    options: RpcErrorOptions = {},
  ) {
    super(message, "cause" in options ? { cause: options.cause } : undefined);
    this.field = options.field;
    this.kind = options.kind;
  }

  /**
   * Whether a person can act on the message alone, so that the CLI prints it as one line without a stack: every
   * code but UNKNOWN and INTERNAL (an unexpected throw or a broken invariant, where the stack is what helps).
   */
  get userFacing(): boolean {
    return !isFault(this.code);
  }

  /** Whether `err` is an RpcError (of `kind`, when given): the one check that replaces `instanceof` on subclasses. */
  static is(err: unknown, kind?: ErrorKind): err is RpcError {
    return err instanceof RpcError && (kind === undefined || err.kind === kind);
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

  /**
   * The error a response's `sppo.v1.Status` reports, its message prefixed by `where` (e.g. "oracle: request 7") and
   * the field, when there is one: `${where} (field ${field}): ${message}`.
   */
  static fromStatus(s: Pick<Status, "code" | "message"> & { field?: string }, where: string): RpcError {
    const field = s.field || undefined;
    return new RpcError(s.code as Code, `${where}${field ? ` (field ${field})` : ""}: ${s.message}`, { field });
  }
}

/** A failure as the `sppo.v1.Status` of a response (code, message, field); a throw that is not an RpcError is INTERNAL. */
export function statusOf(err: unknown): Status {
  const rpc = RpcError.from(err, Code.INTERNAL);
  return create(StatusSchema, { code: rpc.code, message: rpc.message, field: rpc.field ?? "" });
}

/** An error of one kind of bad input, with that kind's code (ERROR_KINDS). */
export function kindError(kind: ErrorKind, message: string, options: Omit<RpcErrorOptions, "kind"> = {}): RpcError {
  return new RpcError(ERROR_KINDS[kind], message, { ...options, kind });
}

/** `code` on the request field `field`: the message is `${field}: ${reason}`. */
export function fieldError(code: Code, field: string, reason: string, options: Omit<RpcErrorOptions, "field"> = {}): RpcError {
  return new RpcError(code, `${field}: ${reason}`, { ...options, field });
}

/** INVALID_ARGUMENT naming the offending field. */
export function invalidArgument(field: string, reason: string): RpcError {
  return fieldError(Code.INVALID_ARGUMENT, field, reason);
}
