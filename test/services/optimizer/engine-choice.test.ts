/**
 * `optimizer.engine: auto`: tfjs only on the native GPU build, onnxruntime everywhere else (the CPU build of
 * tfjs-node also names its backend "tensorflow"); a named engine is kept. Run:
 * node --import tsx --test test/services/optimizer/engine-choice.test.ts
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { initBackend } from "../../../models/backend.js";
import { createTrainEngine, trainEngineChoice } from "../../../services/optimizer/engine.js";

test("auto picks tfjs on tfjs-node-gpu only, onnxruntime on tfjs-node (CPU), wasm and cpu; a named engine is kept", () => {
  assert.equal(trainEngineChoice("auto", { nativePackage: "@tensorflow/tfjs-node-gpu" }), "tfjs");
  assert.equal(trainEngineChoice("auto", { nativePackage: "@tensorflow/tfjs-node" }), "onnxruntime");
  assert.equal(trainEngineChoice("auto", {}), "onnxruntime");
  for (const engine of ["tfjs", "onnxruntime", "data-parallel"] as const) {
    assert.equal(trainEngineChoice(engine, { nativePackage: "@tensorflow/tfjs-node-gpu" }), engine);
    assert.equal(trainEngineChoice(engine, {}), engine);
  }
});

test("the backend this machine starts reports its native package only with the tensorflow backend", async () => {
  const backend = await initBackend("auto");
  assert.equal(backend.nativePackage !== undefined, backend.name === "tensorflow", JSON.stringify(backend));
  const engine = createTrainEngine({ engine: "auto", trainThreads: 1 }, backend);
  try {
    assert.equal(engine.name, backend.nativePackage === "@tensorflow/tfjs-node-gpu" ? "tfjs" : "onnxruntime");
  } finally {
    await engine.close();
  }
});
