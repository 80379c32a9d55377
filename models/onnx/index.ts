/**
 * models/onnx — the policy on onnxruntime: ONNX graphs of GPT-2 and Llama written by our own code (KV cache as
 * inputs/outputs, weights as initializers), and an inference engine over them that samples and scores exactly as
 * the tfjs path does, several times faster. Training stays on tfjs; this is where inference runs.
 *
 * Export:   `serializePolicy(config, weights, { kind })` → model.onnx bytes (kind "causal-lm": HF Optimum's
 *           decoder-with-past interface); `buildPolicyGraph` → the ModelProto; `exportPolicy(source, file,
 *           { externalData, dtype })` (weights in FILE.onnx.data past 2 GiB: ONNX external data).
 * Weights:  sessions map their weights as external data (weights-file.ts): an F32 checkpoint in place, anything
 *           else (BF16, float16 inference weights, weights in memory) from a weights file written for them.
 * Engine:   `createOrtPolicy(dir | loaded | model | { config, weights }, { intraOpThreads, graphOptimizationLevel,
 *           executionProviders, prepare })` → OrtPolicy: `sample(promptIds, SampleOptions)` → SampleResult[],
 *           `score(pairs, { batchSize, padId })` → Score[], `refresh(source)` → RefreshTiming, `dispose()`.
 * Generator: services/generator/onnx-engine.ts wraps an OrtPolicy as the generator's PolicyEngine.
 */
export type { PolicyGraphKind } from "./blocks.js";
export { type ExportOptions, type ExportResult, exportPolicy } from "./export.js";
export { buildPolicyGraph, cacheShape, externalPolicyBytes, POLICY_OPSET, type PolicyGraphOptions, policyStructure, policyWeights, serializePolicy } from "./graph.js";
export { sampleTextOnnx, scoreTextOnnx } from "./text.js";
export { createOrtPolicy, OrtPolicy, type OrtPolicyOptions, type PolicyOperation, type RefreshTiming, type ScoreOptions } from "./policy.js";
export { serializeWithWeights, type WeightBytes } from "./serialize.js";
export {
  cudaProviderInstalled,
  createSession,
  EXECUTION_PROVIDERS,
  type ExecutionProviderChoice,
  GRAPH_OPTIMIZATION_LEVELS,
  type GraphOptimizationLevel,
  type OrtSessionOptions,
  resolveExecutionProviders,
  sessionOptions,
} from "./session.js";
export { type OpenedSource, openSource, type PolicySource, type PolicyWeights, pickParams, readPolicyDir, resolveSource } from "./source.js";
export {
  checkpointExternalWeights,
  defaultWeightsParent,
  type ExternalTensor,
  type ExternalWeights,
  externalInitializers,
  isHalfWeight,
  type OnnxWeightDtype,
  weightsFileBytes,
  writeExternalWeights,
} from "./weights-file.js";
