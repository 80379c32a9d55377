/**
 * lib/grpc/definition.ts: invalid UTF-8 in a string field is decoded as U+FFFD (instead of failing the whole call),
 * and only then: valid input stays strict, and other decodes are not made lenient.
 * Run: node --import tsx --test test/lib/grpc/definition.test.ts
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { CompareRequestSchema } from "../../../gen/sppo/v1/oracle_pb.js";
import { deserializer } from "../../../lib/grpc/definition.js";
import { overwrite } from "./raw-stream.js";

const encode = (prompt: string, candidates: string[]) => toBinary(CompareRequestSchema, create(CompareRequestSchema, { requestId: "r", prompt, candidates }));

test("invalid UTF-8 becomes U+FFFD in the field that held it; the other fields are intact", () => {
  // 0xC3 0x28: a two-byte lead followed by a non-continuation byte.
  const bytes = overwrite(encode("the XX cat", ["good", "bad"]), "XX", [0xc3, 0x28]);
  assert.throws(() => fromBinary(CompareRequestSchema, bytes), /not valid for encoding utf-8/);
  const message = deserializer(CompareRequestSchema)(bytes);
  assert.equal(message.prompt, "the \uFFFD( cat");
  assert.deepEqual(message.candidates, ["good", "bad"]);
  assert.equal(message.requestId, "r");
});

test("valid UTF-8 (a real U+FFFD and other non-ASCII included) decodes as sent", () => {
  const message = deserializer(CompareRequestSchema)(Buffer.from(encode("é ✓ \uFFFD 😀", ["a", "b"])));
  assert.equal(message.prompt, "é ✓ \uFFFD 😀");
});

test("the lenient fallback does not leak: a plain fromBinary afterwards is strict again", () => {
  const bytes = overwrite(encode("XX", ["a", "b"]), "XX", [0xff, 0xfe]);
  assert.equal(deserializer(CompareRequestSchema)(bytes).prompt, "\uFFFD\uFFFD");
  assert.throws(() => fromBinary(CompareRequestSchema, bytes), /not valid for encoding utf-8/);
});

test("bytes that are not a message at all still fail", () => {
  assert.throws(() => deserializer(CompareRequestSchema)(Buffer.from([0x12, 0x7f, 0x01])));
});
