/**
 * Weight sync end to end with the real optimizer service: it trains one iteration and publishes version 1; the
 * generator pulls it over GetWeights (LoadPolicy), and its scores under version 1 equal the trainer's own scores of
 * the trained weights; a second generator that got no LoadPolicy pulls version 1 for requests pinned to it, and a
 * version not published yet fails with the optimizer's NOT_FOUND. The tiny policy has no tokenizer, so requests
 * carry token ids only.
 * Run: node --import tsx --test test/services/generator/optimizer-sync.test.ts
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Generator, type ScoreResponse } from "../../../gen/sppo/v1/generator_pb.js";
import { Optimizer, TrainRequestSchema } from "../../../gen/sppo/v1/optimizer_pb.js";
import { generatorConfigSchema } from "../../../lib/config/generator.js";
import { Code } from "../../../lib/errors.js";
import { createClient } from "../../../lib/grpc/client.js";
import { mount } from "../../../lib/grpc/serve.js";
import { scorePairs } from "../../../models/index.js";
import { createGeneratorService } from "../../../services/generator/server.js";
import { createOptimizerService } from "../../../services/optimizer/server.js";
import { serveForTest } from "../../lib/grpc/harness.js";
import { configAt, endMsg, makeBaseModel, makeExamples, startMsg } from "../optimizer/fixtures.js";

const root = makeBaseModel(5);
after(() => rmSync(root, { recursive: true, force: true }));

test("the generator pulls the optimizer's published version and scores exactly as the trainer does", async () => {
  const optimizerConfig = configAt(root, { backend: "cpu", learningRate: 0.05, batchSize: 4, warmupRatio: 0 });
  const optimizer = await createOptimizerService({ optimizer: optimizerConfig, server: { maxMessageBytes: 1 << 20 } });
  const optimizerServer = await serveForTest([mount(Optimizer, optimizer.implementation)]);
  const generator = await createGeneratorService({
    generator: generatorConfigSchema.parse({ modelDir: optimizerConfig.modelDir, engine: "tfjs", tfjsBackend: "cpu", weightsDir: join(root, "generator") }),
  });
  const generatorServer = await serveForTest([mount(Generator, generator.implementation)]);
  const optimizerClient = createClient(Optimizer, `127.0.0.1:${optimizerServer.port}`);
  const client = createClient(Generator, `127.0.0.1:${generatorServer.port}`);
  try {
    // The generator's base checksum is the optimizer's version 0 checksum: both hash the same files in one order.
    const { versions } = await optimizerClient.listPolicyVersions({});
    assert.equal((await client.getPolicy({})).current?.sha256, versions[0].sha256);

    const examples = makeExamples(optimizerConfig.modelDir, { prompts: 4, k: 2 });
    let published: { version: number; sha256: string } | undefined;
    const requests = [
      create(TrainRequestSchema, { kind: { case: "start", value: startMsg(4) } }),
      ...examples.map((ex) => create(TrainRequestSchema, { kind: { case: "example", value: ex } })),
      create(TrainRequestSchema, { kind: { case: "end", value: endMsg() } }),
    ];
    for await (const r of optimizerClient.train(requests)) {
      if (r.event?.payload.case === "policyPublished") published = r.event.payload.value as { version: number; sha256: string };
    }
    assert.ok(published, "no PolicyPublished");

    const loaded = await client.loadPolicy({ version: published.version, sha256: published.sha256, source: `127.0.0.1:${optimizerServer.port}` });
    assert.equal(loaded.policy?.version, 1);
    assert.equal(loaded.policy?.sha256, published.sha256);

    const prompt = examples[0].promptTokenIds;
    const responses = examples.slice(0, 2).map((e) => [...e.responseTokenIds]);
    const scoreOn = async (policyVersion: number): Promise<ScoreResponse> => {
      const out: ScoreResponse[] = [];
      for await (const r of client.score([{ requestId: `v${policyVersion}`, promptTokenIds: prompt, responses: responses.map((tokenIds) => ({ tokenIds })), policyVersion }])) out.push(r);
      assert.equal(out[0].error, undefined, out[0].error?.message);
      return out[0];
    };
    const v1 = await scoreOn(1);
    const expected = scorePairs(optimizer.trainer.policy, responses.map((response) => ({ prompt: [...prompt], response })), { padId: 0 });
    for (let i = 0; i < responses.length; i++) assert.ok(Math.abs(v1.logprobs[i] - expected[i].logprob) < 1e-5, `${v1.logprobs[i]} vs ${expected[i].logprob}`);
    // Version 0 still answers with the base weights (the examples' reference log-probs), which training moved away from.
    const v0 = await scoreOn(0);
    assert.ok(responses.some((_, i) => Math.abs(v0.logprobs[i] - v1.logprobs[i]) > 1e-4), "training changed nothing");
    for (let i = 0; i < responses.length; i++) assert.ok(Math.abs(v0.logprobs[i] - examples[i].referenceLogprob) < 1e-4);

    // Another replica, which the LoadPolicy did not reach: requests pinned to version 1 pull it from the optimizer
    // and score exactly as the first replica; a version the optimizer has not published yet fails at once with its
    // NOT_FOUND (it does not wait for it).
    const other = await createGeneratorService({
      generator: generatorConfigSchema.parse({ modelDir: optimizerConfig.modelDir, engine: "tfjs", tfjsBackend: "cpu", optimizerTarget: `127.0.0.1:${optimizerServer.port}` }),
    });
    const otherServer = await serveForTest([mount(Generator, other.implementation)]);
    const otherClient = createClient(Generator, `127.0.0.1:${otherServer.port}`);
    try {
      const out = new Map<string, ScoreResponse>();
      const request = (requestId: string, policyVersion: number) => ({ requestId, promptTokenIds: prompt, responses: responses.map((tokenIds) => ({ tokenIds })), policyVersion });
      for await (const r of otherClient.score([request("v1", 1), request("ahead", 2)])) out.set(r.requestId, r);
      assert.equal(out.get("v1")?.error, undefined, out.get("v1")?.error?.message);
      assert.deepEqual(out.get("v1")?.logprobs, v1.logprobs);
      assert.equal(out.get("ahead")?.error?.code, Code.NOT_FOUND);
      assert.match(out.get("ahead")?.error?.message ?? "", /^policy_version: policy version 2 is not held by this generator, and pulling it from the optimizer at \S+ failed: .*policy version 2 does not exist \(latest is 1\)$/);
      assert.equal((await otherClient.getPolicy({})).current?.version, 0);
    } finally {
      otherClient.close();
      await otherServer.shutdown();
      await other.close();
    }
  } finally {
    client.close();
    optimizerClient.close();
    await generatorServer.shutdown();
    await optimizerServer.shutdown();
    await generator.close();
    await optimizer.close?.();
  }
});
