/**
 * The generator refuses a published version whose family or shape differs from its base (version 0): an optimizer
 * on another base model, or holding another run's policy, cannot make it serve that policy. Both by LoadPolicy and
 * by the on-demand pull of a pinned version; nothing is left in its weights folder, the current version stays.
 * Run: node --import tsx --test test/services/generator/other-base.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { generatorConfigSchema } from "../../../lib/config/generator.js";
import { Code, RpcError } from "../../../lib/errors.js";
import type { RunningServer } from "../../../lib/grpc/serve.js";
import { createModel, gpt2Config, llamaConfig, saveModel } from "../../../models/index.js";
import { CONTEXT, type ServedGenerator, serveFakeOptimizer, serveGenerator, tinyTokenizer, writeTinyPolicy } from "./fixtures.js";

let root: string;
let optimizer: RunningServer;
let generator: ServedGenerator;

before(async () => {
  await tf.setBackend("cpu");
  root = mkdtempSync(join(tmpdir(), "sppo-generator-other-base-"));
  const tokenizer = tinyTokenizer();
  const dirs = new Map<number, string>();
  // Version 0 is the generator's base (GPT-2, 2 layers of width 16); version 1 the same base trained further.
  for (const v of [0, 1]) {
    dirs.set(v, join(root, `v${v}`));
    writeTinyPolicy(dirs.get(v) as string, v + 1);
  }
  // Version 2: a GPT-2 of another width and depth; version 3: a Llama of the same vocabulary.
  const ids = { bos_token_id: tokenizer.bosId ?? null, eos_token_id: tokenizer.eosId ?? null, pad_token_id: tokenizer.padId ?? null };
  const others = [
    createModel(gpt2Config({ vocab_size: tokenizer.vocabSize, n_positions: CONTEXT, n_embd: 8, n_layer: 1, n_head: 2, ...ids }), undefined, 3),
    createModel(llamaConfig({ vocab_size: tokenizer.vocabSize, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: CONTEXT, ...ids }), undefined, 4),
  ];
  others.forEach((model, i) => {
    dirs.set(2 + i, join(root, `v${2 + i}`));
    saveModel(dirs.get(2 + i) as string, model, tokenizer);
    model.dispose();
  });
  optimizer = await serveFakeOptimizer(dirs);
  generator = await serveGenerator({
    generator: generatorConfigSchema.parse({
      modelDir: dirs.get(0),
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

async function refused(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof RpcError, String(err));
    assert.equal(err.code, Code.FAILED_PRECONDITION, err.message);
    assert.match(err.message, /version \d from the optimizer at 127\.0\.0\.1:\d+ does not fit this generator's base model \(generator\.modelDir /);
    assert.match(err.message, pattern);
    assert.match(err.message, /give it the same base model as the generator \(optimizer\.modelDir\)/);
    return true;
  });
}

describe("a published version of another model", () => {
  test("LoadPolicy refuses another shape and another family, naming what differs; the current version stays", async () => {
    await refused(generator.client.loadPolicy({ version: 2 }), /n_embd 8, not 16; n_layer 1, not 2; n_inner 32, not 64/);
    await refused(generator.client.loadPolicy({ version: 3 }), /family llama, not gpt2/);
    assert.equal((await generator.client.getPolicy({})).current?.version, 0);
    assert.deepEqual(readdirSync(join(root, "pulled")), [], "nothing refused is kept");
    // The same base trained further is taken.
    assert.equal((await generator.client.loadPolicy({ version: 1 })).policy?.version, 1);
  });

  test("a request pinned to such a version fails with the same refusal (the on-demand pull)", async () => {
    const answers = [];
    for await (const r of generator.client.generate([{ requestId: "pinned", prompt: "tell me about the cat", numSamples: 1, policyVersion: 2, params: { maxNewTokens: 4 } }])) answers.push(r);
    assert.equal(answers.length, 1);
    assert.equal(answers[0].error?.code, Code.FAILED_PRECONDITION);
    assert.match(answers[0].error?.message ?? "", /does not fit this generator's base model.*n_embd 8, not 16/);
  });
});
