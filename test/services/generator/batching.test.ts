/**
 * Seeded Generate requests share engine runs, and sharing changes nothing: on each engine (tfjs, and onnxruntime
 * where it loads), a seeded request gives the same tokens and log-probs alone and batched with other seeded requests
 * (other prompts of other lengths, other seeds, other K). Requests with other sampling options do not share its run.
 * Run: node --import tsx --test test/services/generator/batching.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type GenerateResponse, GenerateRequestSchema } from "../../../gen/sppo/v1/generator_pb.js";
import { generatorConfigSchema } from "../../../lib/config/generator.js";
import { findOnnxLoader, loadEngine } from "../../../services/generator/engine.js";
import { PolicyGenerator } from "../../../services/generator/generator.js";
import { wrapEngine, writeTinyPolicy } from "./fixtures.js";

type GenInit = MessageInitShape<typeof GenerateRequestSchema>;

let root: string;
let dir: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), "sppo-generator-batching-"));
  dir = join(root, "policy");
  writeTinyPolicy(dir, 5);
});
after(() => rmSync(root, { recursive: true, force: true }));

const onnx = await findOnnxLoader();

/** A generator on `engine` whose engine records the rows of every sample run. */
async function withGenerator<T>(engine: "onnx" | "tfjs", fn: (g: PolicyGenerator, runs: number[]) => Promise<T>): Promise<T> {
  const runs: number[] = [];
  const g = await PolicyGenerator.create({
    generator: generatorConfigSchema.parse({ modelDir: dir, engine, tfjsBackend: "cpu", maxSamples: 8, maxBatch: 32 }),
    engineLoader: async (d, options) => {
      const inner = await loadEngine(engine, d, options);
      return wrapEngine(inner, {
        sample(promptIds, o) {
          runs.push(promptIds.length);
          return inner.sample(promptIds, o);
        },
      });
    },
  });
  try {
    return await fn(g, runs);
  } finally {
    await g.close();
  }
}

const params = { temperature: 1, topP: 1, maxNewTokens: 12 };
const target: GenInit = { requestId: "target", prompt: "tell me about the cat", numSamples: 4, params: { ...params, seed: 1234n } };
const others: GenInit[] = [
  { requestId: "o1", prompt: "a dog", numSamples: 3, params: { ...params, seed: 7n } },
  { requestId: "o2", prompt: "the bird sings and the cat runs fast and the dog is kind", numSamples: 5, params: { ...params, seed: 1234n } },
  { requestId: "o3", prompt: "me", numSamples: 2, params: { ...params, seed: 2n ** 60n + 5n } },
  // Same prompt and seed as the target, fewer samples: its rows are the target's first two.
  { requestId: "o4", prompt: "tell me about the cat", numSamples: 2, params: { ...params, seed: 1234n } },
];

/** Answers of `requests`, all sent in the same turn (so that they queue together), by request id. */
async function generateTogether(g: PolicyGenerator, requests: GenInit[]): Promise<Map<string, GenerateResponse>> {
  const responses = await Promise.all(requests.map((r) => g.generate(create(GenerateRequestSchema, r))));
  for (const r of responses) assert.equal(r.error, undefined, r.error?.message);
  return new Map(responses.map((r) => [r.requestId, r]));
}

const tokensOf = (r: GenerateResponse | undefined) => (r as GenerateResponse).candidates.map((c) => [...c.tokenIds]);
const logprobsOf = (r: GenerateResponse | undefined) => (r as GenerateResponse).candidates.map((c) => c.logprob);

async function aloneAndBatched(engine: "onnx" | "tfjs") {
  return withGenerator(engine, async (g, runs) => {
    const alone = new Map<string, GenerateResponse>();
    for (const r of [target, ...others]) alone.set(r.requestId as string, (await generateTogether(g, [r])).get(r.requestId as string) as GenerateResponse);
    assert.deepEqual(runs, [4, 3, 5, 2, 2], "alone: one run per request");
    runs.length = 0;
    const batched = await generateTogether(g, [others[0], others[1], target, others[2], others[3]]);
    assert.deepEqual(runs, [16], "the five seeded requests share one run");
    for (const [id, want] of alone) {
      const got = batched.get(id);
      assert.deepEqual(tokensOf(got), tokensOf(want), `${engine} ${id}: tokens alone and batched`);
      for (const [k, lp] of logprobsOf(got).entries()) assert.ok(Math.abs(lp - logprobsOf(want)[k]) < 1e-4, `${engine} ${id}[${k}]: ${lp} vs ${logprobsOf(want)[k]}`);
    }
    // K samples are distinct draws; equal (seed, prompt) gives the same rows whatever K.
    assert.ok(new Set(tokensOf(batched.get("target")).map((t) => t.join())).size > 1);
    assert.deepEqual(tokensOf(batched.get("o4")), tokensOf(batched.get("target")).slice(0, 2));
    return batched;
  });
}

test("tfjs: a seeded request gives the same tokens alone and batched with other seeded requests", { timeout: 120_000 }, async () => {
  await aloneAndBatched("tfjs");
});

test("seeded requests with other sampling options, or unseeded ones, do not share a run", { timeout: 120_000 }, async () => {
  await withGenerator("tfjs", async (g, runs) => {
    await generateTogether(g, [
      target,
      { requestId: "cooler", prompt: "a dog", numSamples: 3, params: { ...params, seed: 7n, temperature: 0.5 } },
      { requestId: "unseeded", prompt: "me", numSamples: 2, params }, 
      others[1],
    ]);
    assert.deepEqual(runs, [9, 3, 2]);
  });
});

describe("onnxruntime", { skip: !onnx.loader && `onnxruntime is not available here: ${onnx.reason}` }, () => {
  test("a seeded request gives the same tokens alone and batched with other seeded requests, as on tfjs", { timeout: 120_000 }, async () => {
    const viaOnnx = await aloneAndBatched("onnx");
    const viaTfjs = await aloneAndBatched("tfjs");
    for (const [id, r] of viaOnnx) assert.deepEqual(tokensOf(r), tokensOf(viaTfjs.get(id)), `${id}: onnx and tfjs`);
  });
});
