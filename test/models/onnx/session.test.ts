/**
 * onnxruntime session options of models/onnx: checks name the option at fault, execution providers resolve to what
 * this installation has (CPU always last; CUDA only where its provider library is installed), and the options reach
 * a real session. Run: node --import tsx --test test/models/onnx/session.test.ts
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { configSchema } from "../../../lib/config/schema.js";
import { gpt2Config } from "../../../models/index.js";
import { createSession, cudaProviderInstalled, resolveExecutionProviders, serializePolicy, sessionOptions } from "../../../models/onnx/index.js";
import { randomWeights } from "./helpers.js";

describe("session options", () => {
  it("resolve execution providers: auto is CUDA where installed, CPU always last, cuda refused where absent", () => {
    const cuda = cudaProviderInstalled();
    assert.deepEqual(resolveExecutionProviders(["auto"]), cuda ? ["cuda", "cpu"] : ["cpu"]);
    assert.deepEqual(resolveExecutionProviders(["cpu"]), ["cpu"]);
    assert.deepEqual(resolveExecutionProviders(), resolveExecutionProviders(["auto"]));
    if (cuda) assert.deepEqual(resolveExecutionProviders(["cuda", "cpu"]), ["cuda", "cpu"]);
    else assert.throws(() => resolveExecutionProviders(["cuda"]), /"cuda" was asked for but onnxruntime-node's CUDA provider is not installed/);
  });

  it("check every option once, naming it", () => {
    assert.throws(() => sessionOptions({ intraOpThreads: 1.5 }), /intraOpThreads must be an integer ≥ 0, got 1.5/);
    assert.throws(() => sessionOptions({ graphOptimizationLevel: "O3" as "all" }), /graphOptimizationLevel must be one of disabled, basic, extended, all/);
    assert.throws(() => sessionOptions({ executionProviders: ["tpu" as "cpu"] }), /executionProviders: unknown provider tpu/);
    const o = sessionOptions({ intraOpThreads: 3, graphOptimizationLevel: "basic", executionProviders: ["cpu"] });
    assert.equal(o.intraOpNumThreads, 3);
    assert.equal(o.graphOptimizationLevel, "basic");
    assert.deepEqual(o.executionProviders, ["cpu"]);
    assert.deepEqual(o.extra, { session: { intra_op: { allow_spinning: "0" }, disable_prepacking: "0" } });
    assert.equal(sessionOptions({}).intraOpNumThreads, undefined, "0 leaves the choice to onnxruntime");
    assert.deepEqual(sessionOptions({ allowSpinning: true }).extra, { session: { intra_op: { allow_spinning: "1" }, disable_prepacking: "0" } });
    assert.deepEqual(sessionOptions({ prepackWeights: false, externalDataFolder: "/w" }).extra, {
      session: { intra_op: { allow_spinning: "0" }, disable_prepacking: "1", model_external_initializers_file_folder_path: "/w" },
    });
  });

  it("the config's engine.onnx section is accepted as is and gives the same logits at every optimisation level", async () => {
    const onnx = configSchema.parse({}).engine.onnx;
    assert.deepEqual(onnx, { intraOpThreads: 0, graphOptimizationLevel: "all", executionProviders: ["auto"], allowSpinning: false, dtype: "float32", prepackWeights: true, weightsDir: "" });
    assert.throws(() => configSchema.parse({ engine: { onnx: { graphOptimizationLevel: "max" } } }));
    const config = gpt2Config({ vocab_size: 19, n_positions: 8, n_embd: 16, n_layer: 1, n_head: 2 });
    const bytes = serializePolicy(config, randomWeights(config, 4), { kind: "score" });
    const { Tensor } = await import("onnxruntime-node");
    const feeds = {
      input_ids: new Tensor("int64", BigInt64Array.from([1n, 5n, 7n, 2n]), [1, 4]),
      attention_mask: new Tensor("int64", BigInt64Array.from([1n, 1n, 1n, 1n]), [1, 4]),
      targets: new Tensor("int64", BigInt64Array.from([5n, 7n, 2n, 0n]), [1, 4]),
      response_mask: new Tensor("float32", Float32Array.from([0, 1, 1, 0]), [1, 4]),
    };
    const values: number[] = [];
    for (const level of ["disabled", "basic", "extended", "all"] as const) {
      const session = await createSession(bytes, { ...onnx, graphOptimizationLevel: level, intraOpThreads: 1 });
      values.push((await session.run(feeds)).logprob.data[0] as number);
      await session.release();
    }
    assert.ok(values[0] < 0);
    for (const v of values) assert.ok(Math.abs(v - values[0]) < 1e-5, `${values}`);
  });
});
