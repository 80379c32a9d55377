/**
 * Invalid UTF-8 over real gRPC on loopback: a Generate request whose prompt, or a Score request whose response text,
 * holds bytes that are not UTF-8 gets INVALID_ARGUMENT naming the field, and the next request on the same stream is
 * answered.
 * Run: node --import tsx --test test/services/generator/invalid-utf8.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { GenerateRequestSchema, Generator, ScoreRequestSchema } from "../../../gen/sppo/v1/generator_pb.js";
import { generatorConfigSchema } from "../../../lib/config/generator.js";
import { Code } from "../../../lib/errors.js";
import { mount, type RunningServer } from "../../../lib/grpc/serve.js";
import { createGeneratorService } from "../../../services/generator/server.js";
import { serveForTest } from "../../lib/grpc/harness.js";
import { overwrite, rawBidi } from "../../lib/grpc/raw-stream.js";
import { writeTinyPolicy } from "./fixtures.js";

let root: string;
let server: RunningServer;
let service: Awaited<ReturnType<typeof createGeneratorService>>;
before(async () => {
  root = mkdtempSync(join(tmpdir(), "sppo-generator-utf8-"));
  writeTinyPolicy(join(root, "policy"), 1);
  service = await createGeneratorService({ generator: generatorConfigSchema.parse({ modelDir: join(root, "policy"), engine: "tfjs", tfjsBackend: "cpu" }) });
  server = await serveForTest([mount(Generator, service.implementation)]);
});
after(async () => {
  await server?.shutdown();
  await service?.close();
  rmSync(root, { recursive: true, force: true });
});

test("Generate: invalid UTF-8 in prompt → INVALID_ARGUMENT naming prompt; the stream goes on", async () => {
  const generate = (requestId: string, prompt: string) =>
    toBinary(GenerateRequestSchema, create(GenerateRequestSchema, { requestId, prompt, numSamples: 2, params: { maxNewTokens: 4 } }));
  const responses = await rawBidi(`127.0.0.1:${server.port}`, Generator.method.generate, [
    overwrite(generate("bad", "tell me about the QQ"), "QQ", [0xc3, 0x28]),
    generate("good", "tell me about the cat"),
  ]);
  const byId = new Map(responses.map((r) => [r.requestId, r]));
  assert.equal(responses.length, 2);
  const bad = byId.get("bad")?.error;
  assert.equal(bad?.code, Code.INVALID_ARGUMENT);
  assert.match(bad?.message ?? "", /^prompt: is not valid UTF-8/);
  const good = byId.get("good");
  assert.equal(good?.error, undefined, good?.error?.message);
  assert.equal(good?.candidates.length, 2);
});

test("Score: invalid UTF-8 in a response text → INVALID_ARGUMENT naming response_texts[i]; the stream goes on", async () => {
  const score = (requestId: string, texts: string[]) =>
    toBinary(ScoreRequestSchema, create(ScoreRequestSchema, { requestId, prompt: "tell me about the cat", responseTexts: texts }));
  const responses = await rawBidi(`127.0.0.1:${server.port}`, Generator.method.score, [
    overwrite(score("bad", ["the cat is kind", "the QQ runs"]), "QQ", [0xed, 0xa0]),
    score("good", ["the cat is kind", "the dog runs"]),
  ]);
  const byId = new Map(responses.map((r) => [r.requestId, r]));
  assert.equal(responses.length, 2);
  const bad = byId.get("bad")?.error;
  assert.equal(bad?.code, Code.INVALID_ARGUMENT);
  assert.match(bad?.message ?? "", /^response_texts\[1\]: is not valid UTF-8/);
  const good = byId.get("good");
  assert.equal(good?.error, undefined, good?.error?.message);
  assert.equal(good?.logprobs.length, 2);
});
