/**
 * The onnxruntime engine: a policy version served by models/onnx's OrtPolicy (ONNX graphs with a KV cache built from
 * the version's weights; sampling identical to models/sample.ts step for step, so seeds agree across engines up to
 * float rounding), in a worker thread (models/onnx/worker-policy.ts: onnxruntime runs synchronously, and a
 * multi-second run on the server's thread would starve its gRPC traffic). Loading fails — and engine "auto" falls back
 * to tfjs — where onnxruntime-node cannot load.
 */
import { log } from "../../lib/log.js";
import { contextLength, paramShapes } from "../../models/index.js";
import { createWorkerPolicy } from "../../models/onnx/worker-policy.js";
import { type EngineLoadOptions, engineSamples, type PolicyEngine } from "./engine.js";

/** Loads the model directory `dir` into an onnxruntime engine (sampling and scoring sessions built up front). */
export async function loadOnnxEngine(dir: string, options: EngineLoadOptions = {}): Promise<PolicyEngine> {
  // The worker does not build the tokenizer: the generator reads it itself (model-dir.ts).
  const policy = await createWorkerPolicy(dir, { ...options.onnx, prepare: ["sample", "score"] });
  const config = policy.config;
  const scoreBatch = options.maxBatch ?? 32;
  return {
    name: policy.name,
    contextLength: contextLength(config),
    vocabSize: config.vocab_size,
    family: config.model_type,
    parameters: paramShapes(config).reduce((sum, [, shape]) => sum + shape.reduce((a, b) => a * b, 1), 0),
    async sample(promptIds, o) {
      return engineSamples(await policy.sample(promptIds, o));
    },
    score(pairs, o) {
      return policy.score(pairs, { batchSize: scoreBatch, padId: o.padId });
    },
    dispose() {
      policy.dispose().catch((err: unknown) => log.warn({ err }, "generator: disposing an onnxruntime policy failed"));
    },
  };
}
