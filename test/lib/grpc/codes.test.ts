/** The code rules: each names exactly the codes its table row says (run: node --import tsx --test test/lib/grpc/codes.test.ts). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Code } from "../../../lib/errors.js";
import { isConflict, isFault, isItemRefusal, isOverload, isRetryable, isTransportFailure } from "../../../lib/grpc/codes.js";

/** The names of the codes (of all 17) for which `rule` holds. */
const covered = (rule: (code: number) => boolean) =>
  Object.entries(Code)
    .filter(([name, code]) => typeof code === "number" && Number.isNaN(Number(name)) && rule(code))
    .map(([name]) => name)
    .sort();

test("each rule covers exactly its codes", () => {
  assert.equal(Object.values(Code).filter((c) => typeof c === "number").length, 17, "grpc-js lists all 17 codes");
  assert.deepEqual(covered(isRetryable), ["UNAVAILABLE"]);
  assert.deepEqual(covered(isTransportFailure), ["CANCELLED", "INTERNAL", "UNAVAILABLE", "UNKNOWN"]);
  assert.deepEqual(covered(isConflict), ["ABORTED"]);
  assert.deepEqual(covered(isOverload), ["RESOURCE_EXHAUSTED"]);
  assert.deepEqual(covered(isItemRefusal), ["INVALID_ARGUMENT", "OUT_OF_RANGE"]);
  assert.deepEqual(covered(isFault), ["INTERNAL", "UNKNOWN"]);
});

test("a refused item is never re-sent, and a retryable call is a transport failure", () => {
  for (let code = 0; code <= 16; code++) {
    assert.ok(!(isItemRefusal(code) && isTransportFailure(code)), `code ${code}`);
    if (isRetryable(code)) assert.ok(isTransportFailure(code), `code ${code}`);
  }
  assert.equal(isTransportFailure(Code.OK), false);
});
