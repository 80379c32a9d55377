/**
 * The generator on each engine: "auto" picks onnxruntime where it loads, and the onnx and tfjs engines agree on
 * seeded samples and scores of the same weights. Run: node --import tsx --test test/services/generator/engines.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { GenerateRequestSchema, ScoreRequestSchema } from "../../../gen/sppo/v1/generator_pb.js";
import { generatorConfigSchema } from "../../../lib/config/generator.js";
import { findOnnxLoader } from "../../../services/generator/engine.js";
import { PolicyGenerator } from "../../../services/generator/generator.js";
import { writeTinyPolicy } from "./fixtures.js";

let root: string;
let dir: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), "sppo-generator-engines-"));
  dir = join(root, "policy");
  writeTinyPolicy(dir, 3);
});
after(() => rmSync(root, { recursive: true, force: true }));

const onnx = await findOnnxLoader();

async function withGenerator<T>(engine: "auto" | "onnx" | "tfjs", fn: (g: PolicyGenerator) => Promise<T>): Promise<T> {
  const g = await PolicyGenerator.create({ generator: generatorConfigSchema.parse({ modelDir: dir, engine, tfjsBackend: "cpu" }) });
  try {
    return await fn(g);
  } finally {
    await g.close();
  }
}

/** Seeded samples of two prompts, then the score of every sample, on one generator (no gRPC: the core directly). */
async function run(g: PolicyGenerator) {
  const out = [];
  for (const [i, prompt] of ["tell me about the cat", "a dog"].entries()) {
    const gen = await g.generate(create(GenerateRequestSchema, { requestId: `${i}`, prompt, numSamples: 4, params: { seed: 99n, temperature: 1, topP: 1, maxNewTokens: 12 } }));
    assert.equal(gen.error, undefined, gen.error?.message);
    const score = await g.score(create(ScoreRequestSchema, { requestId: `${i}`, promptTokenIds: gen.promptTokenIds, responses: gen.candidates.map((c) => ({ tokenIds: c.tokenIds })) }));
    assert.equal(score.error, undefined, score.error?.message);
    out.push({ engine: gen.engine, tokens: gen.candidates.map((c) => [...c.tokenIds]), logprobs: gen.candidates.map((c) => c.logprob), scores: [...score.logprobs] });
  }
  return out;
}

describe("engines", { skip: !onnx.loader && `onnxruntime is not available here: ${onnx.reason}` }, () => {
  test('"auto" runs on onnxruntime where it loads', async () => {
    await withGenerator("auto", async (g) => assert.equal(g.engineName, "onnxruntime"));
  });

  test("onnx and tfjs report the same policy: family, parameter count, checksum", async () => {
    const onnxPolicy = await withGenerator("onnx", async (g) => g.getPolicy().current);
    const tfjsPolicy = await withGenerator("tfjs", async (g) => g.getPolicy().current);
    assert.equal(onnxPolicy.family, "gpt2");
    assert.ok(onnxPolicy.parameters > 0n);
    assert.deepEqual(onnxPolicy, tfjsPolicy);
  });

  test("onnx and tfjs give the same seeded tokens and the same log-probs; on each, score = sampled logprob", async () => {
    const viaOnnx = await withGenerator("onnx", run);
    const viaTfjs = await withGenerator("tfjs", run);
    for (let i = 0; i < viaOnnx.length; i++) {
      assert.equal(viaOnnx[i].engine, "onnxruntime");
      assert.equal(viaTfjs[i].engine, "tfjs-cpu");
      assert.deepEqual(viaOnnx[i].tokens, viaTfjs[i].tokens);
      for (const r of [viaOnnx[i], viaTfjs[i]]) {
        for (let k = 0; k < r.logprobs.length; k++) assert.ok(Math.abs(r.scores[k] - r.logprobs[k]) < 1e-4, `${r.engine}: ${r.scores[k]} vs ${r.logprobs[k]}`);
      }
      for (let k = 0; k < viaOnnx[i].logprobs.length; k++) assert.ok(Math.abs(viaOnnx[i].logprobs[k] - viaTfjs[i].logprobs[k]) < 1e-4);
    }
  });
});

test('engine "tfjs" never tries onnxruntime', async () => {
  await withGenerator("tfjs", async (g) => assert.match(g.engineName, /^tfjs-/));
});
