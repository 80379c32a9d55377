/**
 * The one error class: codes kept or wrapped, kinds told apart, fields carried through sppo.v1.Status, and which
 * errors the CLI prints as one line (run: node --import tsx --test test/lib/errors.test.ts).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Metadata } from "@grpc/grpc-js";
import { Code, ERROR_KINDS, fieldError, invalidArgument, kindError, RpcError, statusOf } from "../../lib/errors.js";

test("from() keeps an RpcError, keeps a grpc-js ServiceError's code and details, and wraps anything else", () => {
  const rpc = new RpcError(Code.NOT_FOUND, "x: missing");
  assert.equal(RpcError.from(rpc), rpc);
  const service = Object.assign(new Error("14 UNAVAILABLE: connection refused"), { code: Code.UNAVAILABLE, details: "connection refused", metadata: new Metadata() });
  const fromService = RpcError.from(service);
  assert.equal(fromService.code, Code.UNAVAILABLE);
  assert.equal(fromService.message, "connection refused");
  assert.equal(fromService.cause, service);
  const plain = new Error("boom");
  assert.equal(RpcError.from(plain).code, Code.UNKNOWN);
  assert.equal(RpcError.from(plain, Code.INTERNAL).code, Code.INTERNAL);
  assert.equal(RpcError.from(plain).cause, plain);
  assert.equal(RpcError.from("a string").message, "a string");
});

test("a kind fixes the code, and is() tells kinds apart", () => {
  for (const [kind, code] of Object.entries(ERROR_KINDS)) {
    const err = kindError(kind as keyof typeof ERROR_KINDS, `${kind}: bad`);
    assert.equal(err.code, code);
    assert.ok(RpcError.is(err, kind as keyof typeof ERROR_KINDS));
    assert.ok(RpcError.is(err));
  }
  const checkpoint = kindError("checkpoint", "ckpt/manifest.json: missing", { cause: new Error("ENOENT") });
  assert.equal(checkpoint.code, Code.DATA_LOSS);
  assert.equal(RpcError.is(checkpoint, "model-format"), false);
  assert.equal(RpcError.is(new Error("x"), "checkpoint"), false);
  assert.equal((checkpoint.cause as Error).message, "ENOENT");
  assert.equal(new RpcError(Code.INTERNAL, "x").kind, undefined);
});

test("userFacing: every code but UNKNOWN and INTERNAL", () => {
  assert.equal(kindError("config", "server.port: too big").userFacing, true);
  assert.equal(new RpcError(Code.UNAVAILABLE, "optimizer at h:1: not ready").userFacing, true);
  assert.equal(new RpcError(Code.INTERNAL, "invariant").userFacing, false);
  assert.equal(RpcError.from(new TypeError("bug")).userFacing, false);
});

test("the field at fault travels through sppo.v1.Status and back", () => {
  const err = fieldError(Code.FAILED_PRECONDITION, "policy_version", "version 3 is not held");
  assert.equal(err.message, "policy_version: version 3 is not held");
  const status = statusOf(err);
  assert.deepEqual({ code: status.code, message: status.message, field: status.field }, { code: Code.FAILED_PRECONDITION, message: err.message, field: "policy_version" });
  const back = RpcError.fromStatus(status, "generator: request 7");
  assert.equal(back.code, Code.FAILED_PRECONDITION);
  assert.equal(back.field, "policy_version");
  assert.equal(back.message, "generator: request 7 (field policy_version): policy_version: version 3 is not held");
  assert.equal(invalidArgument("candidates[1]", "is empty").field, "candidates[1]");
  assert.equal(statusOf(new Error("boom")).code, Code.INTERNAL, "an unexpected throw is INTERNAL");
  assert.equal(statusOf(new Error("boom")).field, "");
  assert.equal(RpcError.fromStatus(statusOf(new Error("boom")), "oracle").message, "oracle: boom");
});
