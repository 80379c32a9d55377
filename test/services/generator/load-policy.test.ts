/**
 * LoadPolicy: the generator pulls policy versions from a real Optimizer.GetWeights server on loopback (served with
 * lib/weights' weightStream), verifies them, pins requests to versions and evicts old ones.
 * Run: node --import tsx --test test/services/generator/load-policy.test.ts
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import * as tf from "@tensorflow/tfjs";
import type { GenerateRequestSchema, GenerateResponse, Generator } from "../../../gen/sppo/v1/generator_pb.js";
import { generatorConfigSchema } from "../../../lib/config/generator.js";
import { Code, RpcError } from "../../../lib/errors.js";
import type { Client } from "../../../lib/grpc/client.js";
import type { RunningServer } from "../../../lib/grpc/serve.js";
import { directoryManifest } from "../../../lib/weights/index.js";
import { createGeneratorService } from "../../../services/generator/server.js";
import { publishTinyVersions, type ServedGenerator, serveFakeOptimizer, serveGenerator } from "./fixtures.js";

let root: string;
/** Model directory of each published version (version v has weights from seed v + 1). */
let published: Map<number, string>;
let optimizer: RunningServer;
/** When set, the optimizer flips a byte in the chunk with this index (0 = the first chunk, of config.json). */
let corruptChunk: number | undefined;

let generator: ServedGenerator;
let client: Client<typeof Generator>;
let weightsDir: string;
/** Live tfjs tensors before the generator started, and what one loaded version adds. */
let tensorsBefore: number;
let tensorsPerVersion: number;

before(async () => {
  root = mkdtempSync(join(tmpdir(), "sppo-generator-load-"));
  published = publishTinyVersions(root);
  optimizer = await serveFakeOptimizer(published, { corruptChunk: () => corruptChunk });
  weightsDir = join(root, "generator-weights");
  const config = generatorConfigSchema.parse({
    modelDir: published.get(0),
    engine: "tfjs",
    tfjsBackend: "cpu",
    versionsInMemory: 3,
    weightsDir,
    optimizerTarget: `127.0.0.1:${optimizer.port}`,
    // Eviction as LoadPolicy leaves it: pinned requests do not pull (pinned-pull.test.ts tests that).
    pullPinnedVersions: false,
    chunkBytes: 4096,
  });
  tensorsBefore = tf.memory().numTensors;
  // Few, short retries: one test asks for an optimizer that is not there.
  generator = await serveGenerator({ generator: config, client: { maxAttempts: 2, initialBackoffMs: 10, maxBackoffMs: 20 } });
  tensorsPerVersion = tf.memory().numTensors - tensorsBefore;
  client = generator.client;
});

after(async () => {
  await generator.stop();
  await optimizer.shutdown();
  rmSync(root, { recursive: true, force: true });
});

const request = (id: string, policyVersion?: number): MessageInitShape<typeof GenerateRequestSchema> => ({
  requestId: id,
  prompt: "tell me about the cat",
  numSamples: 3,
  policyVersion,
  params: { seed: 11n, temperature: 1, topP: 1, maxNewTokens: 8 },
});

async function generateOne(r: MessageInitShape<typeof GenerateRequestSchema>): Promise<GenerateResponse> {
  const out: GenerateResponse[] = [];
  for await (const x of client.generate([r])) out.push(x);
  assert.equal(out.length, 1);
  return out[0];
}

async function rejectsWith(promise: Promise<unknown>, code: Code, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof RpcError, String(err));
    assert.equal(err.code, code, err.message);
    assert.match(err.message, pattern);
    return true;
  });
}

const fingerprint = (r: GenerateResponse) => r.candidates.map((c) => `${c.tokenIds.join(",")}:${c.logprob.toFixed(5)}`);

describe("LoadPolicy from Optimizer.GetWeights", () => {
  let baseOutput: GenerateResponse;
  before(async () => {
    baseOutput = await generateOne(request("base"));
    assert.equal(baseOutput.error, undefined);
  });

  test("pulls version 1 in chunks, verifies it, makes it current; pinned requests still reach version 0", async () => {
    const { sha256 } = await directoryManifest(published.get(1) as string);
    const res = await client.loadPolicy({ version: 1, sha256 });
    assert.equal(res.policy?.version, 1);
    assert.equal(res.policy?.iteration, 1);
    assert.equal(res.policy?.sha256, sha256);
    assert.equal(res.policy?.family, "gpt2");
    assert.ok(res.loadSeconds > 0 && res.loadSeconds < 60, `${res.loadSeconds}`);

    const p = await client.getPolicy({});
    assert.equal(p.current?.version, 1);
    assert.deepEqual(
      p.loaded.map((v) => v.version),
      [0, 1],
    );

    const current = await generateOne(request("cur"));
    assert.equal(current.policyVersion, 1);
    // Other weights, other samples (and the logprobs certainly differ).
    assert.notDeepEqual(fingerprint(current), fingerprint(baseOutput));
    const pinned = await generateOne(request("pin0", 0));
    assert.equal(pinned.policyVersion, 0);
    assert.deepEqual(fingerprint(pinned), fingerprint(baseOutput));
  });

  test("the pulled version equals the published one: a seeded sample matches a generator started on it", async () => {
    const direct = await createGeneratorService({
      generator: generatorConfigSchema.parse({ modelDir: published.get(1), engine: "tfjs", tfjsBackend: "cpu" }),
    });
    try {
      const { create } = await import("@bufbuild/protobuf");
      const { GenerateRequestSchema } = await import("../../../gen/sppo/v1/generator_pb.js");
      const local = await direct.generator.generate(create(GenerateRequestSchema, request("direct")));
      const remote = await generateOne(request("remote", 1));
      assert.deepEqual(fingerprint(remote), fingerprint(local));
    } finally {
      await direct.close();
    }
  });

  test("a corrupted chunk fails with DATA_LOSS naming the file; the current version is unchanged", async () => {
    corruptChunk = 1; // the first chunk of model.safetensors
    try {
      await rejectsWith(client.loadPolicy({ version: 2 }), Code.DATA_LOSS, /model\.safetensors: SHA-256 [0-9a-f]{64} does not match the manifest's/);
    } finally {
      corruptChunk = undefined;
    }
    const p = await client.getPolicy({});
    assert.equal(p.current?.version, 1);
    assert.deepEqual(
      p.loaded.map((v) => v.version),
      [0, 1],
    );
    // Nothing half-written is left in the weights directory.
    assert.deepEqual(readdirSync(weightsDir).sort(), ["v1"]);
  });

  test("an expected checksum that does not match is DATA_LOSS; an unknown version is the optimizer's NOT_FOUND", async () => {
    await rejectsWith(client.loadPolicy({ version: 2, sha256: "ab".repeat(32) }), Code.DATA_LOSS, /^\/sppo\.v1\.Generator\/LoadPolicy.*sha256: version 2 has SHA-256 [0-9a-f]{64}, expected (ab){32}/);
    await rejectsWith(client.loadPolicy({ version: 9 }), Code.NOT_FOUND, /version: 9 was never published/);
    await rejectsWith(client.loadPolicy({ version: 2, sha256: "xyz" }), Code.INVALID_ARGUMENT, /sha256: not a hex SHA-256/);
    // Nothing listens on port 1 of loopback.
    await rejectsWith(client.loadPolicy({ version: 2, source: "127.0.0.1:1" }), Code.UNAVAILABLE, /GetWeights/);
    assert.equal((await client.getPolicy({})).current?.version, 1);
  });

  test("keeps versionsInMemory versions (base included), evicting the oldest; evicted pins fail", async () => {
    await client.loadPolicy({ version: 2 });
    await client.loadPolicy({ version: 3 });
    let p = await client.getPolicy({});
    assert.equal(p.current?.version, 3);
    assert.deepEqual(
      p.loaded.map((v) => v.version),
      [0, 2, 3],
    );
    const evicted = await generateOne(request("pin1", 1));
    assert.equal(evicted.error?.code, Code.FAILED_PRECONDITION);
    assert.equal(evicted.error?.field, "policy_version");
    assert.match(
      evicted.error?.message ?? "",
      /^policy_version: policy version 1 is not held by this generator \(held: 0, 2, 3; current: 3\); generator\.pullPinnedVersions is false: set it to true, or call LoadPolicy\(1\) on this generator first$/,
    );
    assert.equal(existsSync(join(weightsDir, "v1")), false);
    assert.equal((await generateOne(request("pin2", 2))).policyVersion, 2);

    // Going back to a held version is immediate and pulls nothing; going back to the base too.
    const back = await client.loadPolicy({ version: 2 });
    assert.equal(back.policy?.version, 2);
    assert.equal((await client.loadPolicy({ version: 0 })).policy?.version, 0);
    assert.deepEqual(fingerprint(await generateOne(request("base-again"))), fingerprint(baseOutput));
    // Now 3 is the oldest loaded: loading 4 evicts it, not the recently used 2.
    await client.loadPolicy({ version: 4 });
    p = await client.getPolicy({});
    assert.deepEqual(
      p.loaded.map((v) => v.version),
      [0, 2, 4],
    );
    // Evicted versions gave their weights back: exactly three versions' tensors are alive.
    assert.ok(tensorsPerVersion > 0);
    assert.equal(tf.memory().numTensors - tensorsBefore, 3 * tensorsPerVersion);
    assert.deepEqual(readdirSync(weightsDir).sort(), ["v2", "v4"]);
  });
});
