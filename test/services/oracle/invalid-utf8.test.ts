/**
 * Invalid UTF-8 over real gRPC on loopback: a Compare request whose prompt or candidate holds bytes that are not UTF-8
 * gets INVALID_ARGUMENT naming the field, and the next request on the same stream is answered.
 * Run: node --import tsx --test test/services/oracle/invalid-utf8.test.ts
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { CompareRequestSchema, PreferenceOracle } from "../../../gen/sppo/v1/oracle_pb.js";
import { oracleConfigSchema } from "../../../lib/config/oracle.js";
import { Code } from "../../../lib/errors.js";
import type { RunningServer } from "../../../lib/grpc/serve.js";
import { mount } from "../../../lib/grpc/serve.js";
import { createOracleService } from "../../../services/oracle/server.js";
import { serveForTest } from "../../lib/grpc/harness.js";
import { overwrite, rawBidi } from "../../lib/grpc/raw-stream.js";

let server: RunningServer;
let service: Awaited<ReturnType<typeof createOracleService>>;
before(async () => {
  service = await createOracleService({ oracle: oracleConfigSchema.parse({ backend: "synthetic-adjectives" }) });
  server = await serveForTest([mount(PreferenceOracle, service.implementation)]);
});
after(async () => {
  await server.shutdown();
  await service.close();
});

const request = (requestId: string, prompt: string, candidates: string[]) => toBinary(CompareRequestSchema, create(CompareRequestSchema, { requestId, prompt, candidates }));

test("invalid UTF-8 in prompt or a candidate: INVALID_ARGUMENT naming the field; the stream goes on", async () => {
  const responses = await rawBidi(`127.0.0.1:${server.port}`, PreferenceOracle.method.compare, [
    overwrite(request("bad-prompt", "describe the QQ", ["a good cat", "a bad dog"]), "QQ", [0xc3, 0x28]),
    request("good-1", "describe the cat", ["a good cat", "a bad dog"]),
    overwrite(request("bad-candidate", "describe the cat", ["a good cat", "a bad QQ"]), "QQ", [0xff, 0xfe]),
    // U+FFFD sent as valid UTF-8 is text (a byte-level tokenizer decodes a cut character so): accepted.
    request("good-2", "describe the dog", ["a bad dog \uFFFD", "a good dog"]),
  ]);
  const byId = new Map(responses.map((r) => [r.requestId, r]));
  assert.equal(responses.length, 4);
  assert.equal(byId.size, 4);
  const badPrompt = byId.get("bad-prompt")?.error;
  assert.equal(badPrompt?.code, Code.INVALID_ARGUMENT);
  assert.equal(badPrompt?.field, "prompt");
  assert.match(badPrompt?.message ?? "", /^prompt: is not valid UTF-8 \(byte 0xC3 at index 13/);
  const badCandidate = byId.get("bad-candidate")?.error;
  assert.equal(badCandidate?.code, Code.INVALID_ARGUMENT);
  assert.equal(badCandidate?.field, "candidates[1]");
  for (const id of ["good-1", "good-2"]) {
    const r = byId.get(id);
    assert.equal(r?.error, undefined, `${id}: ${r?.error?.message}`);
    assert.equal(r?.probabilities.length, 4);
  }
});
