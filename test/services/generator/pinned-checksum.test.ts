/**
 * Requests pinned by version and checksum (policy_sha256): a generator replica still holding an earlier run's copy
 * of a version number (LoadPolicy reached another replica) pulls this run's copy instead of sampling from the old
 * one; a checksum the optimizer cannot serve is DATA_LOSS, another base is FAILED_PRECONDITION.
 * Run: node --import tsx --test test/services/generator/pinned-checksum.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import * as tf from "@tensorflow/tfjs";
import type { GenerateRequestSchema, GenerateResponse } from "../../../gen/sppo/v1/generator_pb.js";
import { generatorConfigSchema } from "../../../lib/config/generator.js";
import { Code } from "../../../lib/errors.js";
import type { RunningServer } from "../../../lib/grpc/serve.js";
import { directoryManifestSync } from "../../../lib/weights/manifest.js";
import { type ServedGenerator, serveFakeOptimizer, serveGenerator, writeTinyPolicy } from "./fixtures.js";

let root: string;
let optimizer: RunningServer;
let generator: ServedGenerator;
/** What the fake optimizer serves as each version (changed between tests: another run's versions). */
const served = new Map<number, string>();
const dirs: Record<string, string> = {};
const sha = (name: string) => directoryManifestSync(dirs[name]).sha256;

before(async () => {
  await tf.setBackend("cpu");
  root = mkdtempSync(join(tmpdir(), "sppo-generator-checksum-"));
  // The base, run A's version 1 and run B's version 1 (same architecture, other weights).
  for (const [name, seed] of [["base", 1], ["a1", 2], ["b1", 3]] as const) {
    dirs[name] = join(root, name);
    writeTinyPolicy(dirs[name], seed);
  }
  served.set(0, dirs.base);
  served.set(1, dirs.a1);
  optimizer = await serveFakeOptimizer(served);
  generator = await serveGenerator({
    generator: generatorConfigSchema.parse({
      modelDir: dirs.base,
      engine: "tfjs",
      tfjsBackend: "cpu",
      weightsDir: join(root, "pulled"),
      optimizerTarget: `127.0.0.1:${optimizer.port}`,
    }),
  });
});

after(async () => {
  await generator.stop();
  await optimizer.shutdown();
  rmSync(root, { recursive: true, force: true });
});

async function generate(r: { policyVersion?: number; policySha256?: string }): Promise<GenerateResponse> {
  const out: GenerateResponse[] = [];
  const request: MessageInitShape<typeof GenerateRequestSchema> = { requestId: "r", prompt: "tell me about the cat", numSamples: 2, params: { seed: 5n, maxNewTokens: 6 }, ...r };
  for await (const x of generator.client.generate([request])) out.push(x);
  assert.equal(out.length, 1);
  return out[0];
}

const held = async (version: number) => (await generator.client.getPolicy({})).loaded.find((v) => v.version === version)?.sha256;

describe("requests pinned by checksum", () => {
  test("a held copy with another checksum is replaced by the one asked for, pulled from the optimizer", async () => {
    // Run A's version 1 is current here (its LoadPolicy reached this replica).
    assert.equal((await generator.client.loadPolicy({ version: 1, sha256: sha("a1") })).policy?.sha256, sha("a1"));
    const fromA = await generate({ policyVersion: 1, policySha256: sha("a1") });
    assert.equal(fromA.error, undefined);
    // Run B now publishes its own version 1; its requests name B's checksum.
    served.set(1, dirs.b1);
    const fromB = await generate({ policyVersion: 1, policySha256: sha("b1") });
    assert.equal(fromB.error, undefined);
    assert.equal(await held(1), sha("b1"), "B's copy replaced A's");
    assert.notDeepEqual(fromB.candidates.map((c) => c.logprob), fromA.candidates.map((c) => c.logprob));
    assert.equal((await generator.client.getPolicy({})).current?.sha256, sha("b1"), "the replaced copy was current: its replacement is");
    // Without a checksum, whatever is held serves (as before).
    assert.equal((await generate({ policyVersion: 1 })).error, undefined);
  });

  test("a checksum the optimizer does not serve is DATA_LOSS; another base is FAILED_PRECONDITION; bad input is named", async () => {
    const stale = await generate({ policyVersion: 1, policySha256: sha("a1") });
    assert.equal(stale.error?.code, Code.DATA_LOSS, stale.error?.message);
    assert.match(stale.error?.message ?? "", /held by this generator with another checksum .*expected [0-9a-f]{64}/);
    assert.equal(await held(1), sha("b1"), "the held copy is kept");
    const otherBase = await generate({ policyVersion: 0, policySha256: sha("a1") });
    assert.equal(otherBase.error?.code, Code.FAILED_PRECONDITION);
    assert.match(otherBase.error?.message ?? "", /this generator's base \(generator\.modelDir .*\) [0-9a-f]{64}: the run is on another base model/);
    assert.equal((await generate({ policyVersion: 0, policySha256: sha("base") })).error, undefined);
    const bad = await generate({ policyVersion: 1, policySha256: "f00" });
    assert.equal(bad.error?.code, Code.INVALID_ARGUMENT);
    assert.equal(bad.error?.field, "policy_sha256");
    assert.equal((await generate({ policySha256: sha("b1") })).error?.code, Code.INVALID_ARGUMENT, "a checksum needs a version");
  });
});
