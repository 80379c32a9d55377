/**
 * services/index.ts hands each service the config sections it reads: the optimizer the server's message limit (its
 * GetWeights chunks must fit it), the generator the engine section (engine.onnx reaches its onnxruntime sessions).
 * Run: node --import tsx --test test/services/index.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Optimizer } from "../../gen/sppo/v1/optimizer_pb.js";
import { generatorConfigSchema } from "../../lib/config/generator.js";
import { configSchema } from "../../lib/config/schema.js";
import { createClient } from "../../lib/grpc/client.js";
import { initBackend } from "../../models/index.js";
import { cudaProviderInstalled } from "../../models/onnx/session.js";
import { findOnnxLoader } from "../../services/generator/engine.js";
import { engineLoadOptions } from "../../services/generator/versions.js";
import { serviceFactories } from "../../services/index.js";
import { serveForTest } from "../lib/grpc/harness.js";
import { writeTinyPolicy } from "./generator/fixtures.js";

const root = mkdtempSync(join(tmpdir(), "sppo-services-"));
after(() => rmSync(root, { recursive: true, force: true }));
await initBackend("cpu"); // the tiny policy is made with tensors
const policy = join(root, "policy");
writeTinyPolicy(policy, 5);
const onnx = await findOnnxLoader();
const skip = !onnx.loader ? `onnxruntime is not available here: ${onnx.reason}` : cudaProviderInstalled() && "this installation has a CUDA provider, so asking for it cannot fail";

describe("serviceFactories", () => {
  test("the optimizer's GetWeights chunks fit server.maxMessageBytes", async () => {
    const maxMessageBytes = 8192;
    const config = configSchema.parse({
      server: { maxMessageBytes },
      optimizer: { modelDir: policy, policyDir: join(root, "policies"), checkpointDir: join(root, "checkpoints"), trainInWorker: false, backend: "cpu" },
    });
    const instance = await serviceFactories.optimizer(config);
    const server = await serveForTest(instance.services, { maxMessageBytes });
    const client = createClient(Optimizer, `127.0.0.1:${server.port}`);
    try {
      const sizes: number[] = [];
      // Asks for far more per chunk than the server may send in one message.
      for await (const m of client.getWeights({ version: 0, chunkBytes: 1 << 20 })) if (m.kind.case === "chunk") sizes.push(m.kind.value.data.length);
      const total = sizes.reduce((a, b) => a + b, 0);
      assert.ok(total > maxMessageBytes, `the policy (${total} bytes) must not fit one message for this test to mean anything`);
      assert.ok(Math.max(...sizes) < maxMessageBytes, `chunks of ${Math.max(...sizes)} bytes exceed server.maxMessageBytes ${maxMessageBytes}`);
    } finally {
      client.close();
      await server.shutdown();
      await instance.close();
    }
  });

  test("the generator's onnx engine takes engine.onnx", { skip }, async () => {
    const config = (providers: string[]) => configSchema.parse({ generator: { modelDir: policy, engine: "onnx" }, engine: { onnx: { executionProviders: providers } } });
    // Asking for a provider this installation lacks fails at start-up: the setting reached the sessions.
    await assert.rejects(serviceFactories.generator(config(["cuda"])), /executionProviders: "cuda" was asked for/);
    const instance = await serviceFactories.generator(config(["cpu"]));
    await instance.close();
  });
});

test("generator.tfjsBackend and generator.onnxThreads override the engine section when set", () => {
  const engine = { backend: "wasm" as const, onnx: { intraOpThreads: 1, graphOptimizationLevel: "basic" as const, executionProviders: ["cpu" as const], allowSpinning: true, dtype: "float32" as const, prepackWeights: true, weightsDir: "" } };
  const fromEngine = engineLoadOptions({ generator: generatorConfigSchema.parse({}), engine });
  assert.deepEqual(fromEngine, { tfjsBackend: "wasm", onnx: engine.onnx, maxBatch: 32 });
  const overridden = engineLoadOptions({ generator: generatorConfigSchema.parse({ tfjsBackend: "cpu", onnxThreads: 0 }), engine });
  assert.deepEqual(overridden, { tfjsBackend: "cpu", onnx: { ...engine.onnx, intraOpThreads: 0 }, maxBatch: 32 });
});
