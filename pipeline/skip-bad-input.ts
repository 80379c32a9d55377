import { EMPTY, type Observable, throwError } from "rxjs";
import { Code, RpcError } from "../lib/errors.js";

/** Per-item refusals a stage drops (and reports) instead of ending the run: the item itself was unusable. */
const SKIPPABLE = new Set<Code>([Code.INVALID_ARGUMENT, Code.OUT_OF_RANGE]);

/**
 * For `catchError` inside a stage's per-item `mergeMap`: a refusal of the item (INVALID_ARGUMENT, OUT_OF_RANGE)
 * is reported through `report` and the item is dropped; anything else (the service is down, the answer is
 * malformed) still ends the stream, since going on would hide a fault.
 */
export function skipBadInput(err: unknown, report: (error: RpcError) => void): Observable<never> {
  if (err instanceof RpcError && SKIPPABLE.has(err.code)) {
    report(err);
    return EMPTY;
  }
  return throwError(() => err);
}
