/**
 * models/onnx graphs: the causal-lm graph of the tiny GPT-2 and Llama fixtures gives the logits of the independent
 * PyTorch computation (scripts/torch/make_fixtures.py); prefill + cached one-token steps and left padding give the
 * full-sequence logits; every architecture variant matches the tfjs forward; the fast serializer writes exactly the
 * message protobuf-es would.
 * Run: node --import tsx --test test/models/onnx/graph.test.ts
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import { equals } from "@bufbuild/protobuf";
import * as tf from "@tensorflow/tfjs";
import * as ort from "onnxruntime-node";
import { ModelProtoSchema } from "onnx-buf";
import { parseModel, serializeModel } from "../../../lib/onnx/index.js";
import { gpt2Config, initBackend, llamaConfig, loadModel, type ModelConfig, modelFromTensors, modelTensors } from "../../../models/index.js";
import { buildPolicyGraph, cacheShape, serializePolicy } from "../../../models/onnx/index.js";
import { FIXTURES, maxAbsDiff, readExpected } from "../helpers.js";
import { fullFeeds, randomWeights } from "./helpers.js";

const big = (values: number[]) => BigInt64Array.from(values, (v) => BigInt(v));

before(async () => {
  await initBackend("cpu");
});

describe("causal-lm graph against PyTorch", () => {
  for (const family of ["gpt2", "llama"]) {
    it(`${family}: logits match the PyTorch fixture to 1e-4`, async () => {
      const { model } = loadModel(join(FIXTURES, family));
      const expected = readExpected(family);
      const session = await ort.InferenceSession.create(serializePolicy(model.config, modelTensors(model)));
      const out = await session.run(fullFeeds(model.config, expected.ids));
      assert.deepEqual(out.logits.dims, expected.shape);
      const diff = maxAbsDiff(out.logits.data as Float32Array, expected.logits);
      assert.ok(diff < 1e-4, `max |Δlogit| = ${diff}`);
      const { kvHeads, headDim } = cacheShape(model.config);
      assert.deepEqual(out["present.1.value"].dims, [2, kvHeads, expected.shape[1], headDim]);
      await session.release();
      model.dispose();
    });

    it(`${family}: prefill, cached one-token steps and left padding give the full-sequence logits`, async () => {
      const { model } = loadModel(join(FIXTURES, family));
      const expected = readExpected(family);
      const [B, T, V] = expected.shape;
      const { layers } = cacheShape(model.config);
      const session = await ort.InferenceSession.create(serializePolicy(model.config, modelTensors(model)));
      const full = (await session.run(fullFeeds(model.config, expected.ids))).logits.data as Float32Array;
      // Prefill 3 tokens, then one token per step through the cache.
      const prefill = fullFeeds(
        model.config,
        expected.ids.map((row) => row.slice(0, 3)),
      );
      let out = await session.run(prefill);
      for (let t = 3; t < T; t++) {
        const feeds: Record<string, ort.Tensor> = {
          input_ids: new ort.Tensor("int64", big(expected.ids.map((row) => row[t])), [B, 1]),
          attention_mask: new ort.Tensor("int64", big(new Array(B * (t + 1)).fill(1)), [B, t + 1]),
          position_ids: new ort.Tensor("int64", big(new Array(B).fill(t)), [B, 1]),
        };
        for (let i = 0; i < layers; i++) {
          feeds[`past_key_values.${i}.key`] = out[`present.${i}.key`];
          feeds[`past_key_values.${i}.value`] = out[`present.${i}.value`];
        }
        out = await session.run(feeds);
        const step = out.logits.data as Float32Array; // (B, 1, V)
        for (let b = 0; b < B; b++) {
          const want = full.subarray((b * T + t) * V, (b * T + t + 1) * V);
          const diff = maxAbsDiff(step.subarray(b * V, (b + 1) * V), want);
          assert.ok(diff < 1e-5, `row ${b} step ${t}: max |Δ| = ${diff}`);
        }
      }
      // Row 1 left-padded by 3 (pad id 7, masked, positions from its first real token) beside unpadded row 0.
      const pad = 3;
      const ids = [[...expected.ids[0]], [7, 7, 7, ...expected.ids[1].slice(0, T - pad)]];
      const feeds = fullFeeds(model.config, ids);
      feeds.attention_mask = new ort.Tensor("int64", big([...new Array(T).fill(1), 0, 0, 0, ...new Array(T - pad).fill(1)]), [B, T]);
      feeds.position_ids = new ort.Tensor("int64", big([...Array.from({ length: T }, (_, t) => t), 0, 0, 0, ...Array.from({ length: T - pad }, (_, t) => t)]), [B, T]);
      const padded = (await session.run(feeds)).logits.data as Float32Array;
      assert.ok(maxAbsDiff(padded.subarray(0, T * V), full.subarray(0, T * V)) < 1e-5);
      for (let t = 0; t < T - pad; t++) {
        const diff = maxAbsDiff(padded.subarray((T + pad + t) * V, (T + pad + t + 1) * V), full.subarray((T + t) * V, (T + t + 1) * V));
        assert.ok(diff < 1e-5, `padded row, position ${t}: max |Δ| = ${diff}`);
      }
      await session.release();
      model.dispose();
    });
  }
});

/** Architecture variants beyond the fixtures, each checked against the tfjs forward of the same weights. */
const VARIANTS: [string, ModelConfig][] = [
  ["gpt2 gelu (erf), n_inner 40", gpt2Config({ vocab_size: 37, n_positions: 16, n_embd: 24, n_layer: 2, n_head: 3, n_inner: 40, activation_function: "gelu" })],
  ["gpt2 relu", gpt2Config({ vocab_size: 37, n_positions: 16, n_embd: 24, n_layer: 1, n_head: 2, activation_function: "relu" })],
  [
    "llama tied, attention + MLP biases, 4 query heads on 1 kv head",
    llamaConfig({
      vocab_size: 41,
      hidden_size: 32,
      intermediate_size: 44,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 1,
      max_position_embeddings: 20,
      tie_word_embeddings: true,
      attention_bias: true,
      mlp_bias: true,
      rope_theta: 10000,
    }),
  ],
  ["llama head_dim 12 ≠ hidden/heads", llamaConfig({ vocab_size: 29, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 2, head_dim: 12, max_position_embeddings: 16 })],
];

describe("architecture variants against the tfjs forward", () => {
  for (const [name, config] of VARIANTS) {
    it(`${name}: logits within 1e-4`, async () => {
      const weights = randomWeights(config, 3);
      const model = modelFromTensors(config, weights);
      const ids = [
        [1, 4, 9, 16, 25 % config.vocab_size, 2, 3, 5, 8, 13],
        [7, 7, 0, 1, 2, 3, 28, 20, 11, 6],
      ];
      const session = await ort.InferenceSession.create(serializePolicy(config, weights));
      const ort_ = (await session.run(fullFeeds(config, ids))).logits;
      const idsT = tf.tensor2d(ids, undefined, "int32");
      const { logits } = model.forward(idsT);
      assert.deepEqual(ort_.dims, logits.shape);
      const diff = maxAbsDiff(ort_.data as Float32Array, logits.dataSync());
      assert.ok(diff < 1e-4, `max |Δlogit| = ${diff}`);
      tf.dispose([idsT, logits]);
      model.dispose();
      await session.release();
    });
  }
});

describe("serialization", () => {
  it("the fast serializer writes the message protobuf-es writes, for every kind", () => {
    const config = VARIANTS[2][1];
    const weights = randomWeights(config, 5);
    for (const kind of ["causal-lm", "step", "score"] as const) {
      const fast = serializePolicy(config, weights, { kind });
      const reference = buildPolicyGraph(config, weights, { kind });
      assert.ok(equals(ModelProtoSchema, parseModel(fast), reference), `${kind}: parsed fast bytes differ from the message`);
      assert.ok(equals(ModelProtoSchema, parseModel(serializeModel(reference)), reference));
      // Weights first, under their HF names, then the graph's own constants.
      assert.equal(reference.graph?.initializer[0].name, "model.embed_tokens.weight");
    }
  });

  it("names a missing or misshapen weight", () => {
    const config = VARIANTS[1][1];
    const weights = randomWeights(config, 1);
    const missing = new Map(weights);
    missing.delete("transformer.h.0.mlp.c_fc.bias");
    assert.throws(() => serializePolicy(config, missing), /weight transformer\.h\.0\.mlp\.c_fc\.bias is missing/);
    const wrong = new Map(weights);
    wrong.set("transformer.wpe.weight", { shape: [3, 24], data: new Float32Array(72) });
    assert.throws(() => serializePolicy(config, wrong), /transformer\.wpe\.weight has shape \[3,24\]/);
  });
});
