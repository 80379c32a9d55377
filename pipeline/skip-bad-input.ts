import { EMPTY, type Observable, throwError } from "rxjs";
import { RpcError } from "../lib/errors.js";
import { isItemRefusal } from "../lib/grpc/codes.js";

/**
 * For `catchError` inside a stage's per-item `mergeMap`: a refusal of the item (INVALID_ARGUMENT, OUT_OF_RANGE)
 * is reported through `report` and the item is dropped; anything else (the service is down, the answer is
 * malformed) still ends the stream, since going on would hide a fault.
 */
export function skipBadInput(err: unknown, report: (error: RpcError) => void): Observable<never> {
  if (err instanceof RpcError && isItemRefusal(err.code)) {
    report(err);
    return EMPTY;
  }
  return throwError(() => err);
}
