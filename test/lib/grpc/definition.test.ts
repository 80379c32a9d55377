/**
 * lib/grpc/definition.ts: invalid UTF-8 in a string field is decoded with each bad byte escaped as a lone surrogate
 * (instead of failing the whole call), which `invalidUtf8` reports; valid input (U+FFFD included) decodes as sent,
 * and other decodes are not made lenient.
 * Run: node --import tsx --test test/lib/grpc/definition.test.ts
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { CompareRequestSchema } from "../../../gen/sppo/v1/oracle_pb.js";
import { decodeUtf8Escaped, deserializer, invalidUtf8 } from "../../../lib/grpc/definition.js";
import { overwrite } from "./raw-stream.js";

const encode = (prompt: string, candidates: string[]) => toBinary(CompareRequestSchema, create(CompareRequestSchema, { requestId: "r", prompt, candidates }));

test("invalid UTF-8 is escaped in the field that held it, and reported; the other fields are intact", () => {
  // 0xC3 0x28: a two-byte lead followed by a non-continuation byte.
  const bytes = overwrite(encode("the XX cat", ["good", "bad"]), "XX", [0xc3, 0x28]);
  assert.throws(() => fromBinary(CompareRequestSchema, bytes), /not valid for encoding utf-8/);
  const message = deserializer(CompareRequestSchema)(bytes);
  assert.equal(message.prompt, "the \uDCC3( cat");
  assert.equal(invalidUtf8(message.prompt), "is not valid UTF-8 (byte 0xC3 at index 4 does not form a UTF-8 sequence)");
  assert.deepEqual(message.candidates, ["good", "bad"]);
  assert.equal(invalidUtf8(message.candidates[0]), undefined);
  assert.equal(message.requestId, "r");
});

test("valid UTF-8 (a real U+FFFD and other non-ASCII included) decodes as sent", () => {
  // U+10080 is the surrogate pair D800 DC80: its low half lies in the escape range but is not alone.
  const text = "é ✓ \uFFFD 😀 \u{10080}";
  const message = deserializer(CompareRequestSchema)(Buffer.from(encode(text, ["a", "b"])));
  assert.equal(message.prompt, text);
  assert.equal(invalidUtf8(message.prompt), undefined, "a U+FFFD sent as valid UTF-8 (a byte-level tokenizer's output) is text");
});

test("decodeUtf8Escaped: equals strict decoding on valid UTF-8, and loses no byte of invalid input", () => {
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  let valid = 0;
  for (let n = 0; n < 3000; n++) {
    // Mostly-ASCII bytes with lead and continuation bytes mixed in: both valid and invalid sequences.
    const bytes = Uint8Array.from({ length: 1 + Math.floor(rand() * 12) }, () => (rand() < 0.5 ? Math.floor(rand() * 0x80) : 0x80 + Math.floor(rand() * 0x80)));
    const escaped = decodeUtf8Escaped(bytes);
    let expected: string | undefined;
    try {
      expected = strict.decode(bytes);
    } catch {
      expected = undefined;
    }
    if (expected !== undefined) {
      valid++;
      assert.equal(escaped, expected);
      assert.equal(invalidUtf8(escaped), undefined);
    } else assert.ok(invalidUtf8(escaped), `${Buffer.from(bytes).toString("hex")} is not UTF-8 but was not reported`);
    // Lossless: the escapes map back to their bytes, the rest re-encodes to the original bytes.
    const back = Buffer.concat([...escaped].map((ch) => {
      const c = ch.codePointAt(0) as number;
      return c >= 0xdc80 && c <= 0xdcff ? Buffer.from([c - 0xdc00]) : Buffer.from(ch, "utf8");
    }));
    assert.deepEqual(new Uint8Array(back), bytes);
  }
  assert.ok(valid > 100, `only ${valid} valid samples`);
  // Overlong encodings, encoded surrogates and code points past U+10FFFF are not UTF-8.
  for (const bad of [[0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]]) {
    assert.ok(invalidUtf8(decodeUtf8Escaped(Uint8Array.from(bad))), bad.join(","));
  }
});

test("the lenient fallback does not leak: a plain fromBinary afterwards is strict again", () => {
  const bytes = overwrite(encode("XX", ["a", "b"]), "XX", [0xff, 0xfe]);
  assert.equal(deserializer(CompareRequestSchema)(bytes).prompt, "\uDCFF\uDCFE");
  assert.throws(() => fromBinary(CompareRequestSchema, bytes), /not valid for encoding utf-8/);
});

test("bytes that are not a message at all still fail", () => {
  assert.throws(() => deserializer(CompareRequestSchema)(Buffer.from([0x12, 0x7f, 0x01])));
});
