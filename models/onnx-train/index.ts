/**
 * models/onnx-train — the fast training path: a micro-batch's forward and backward pass as one onnxruntime graph
 * (weights as inputs, MLAS kernels on every core), the optimizer update in JS over Float32Arrays, exact to float
 * rounding against the tfjs reference (test/models/onnx-train). tfjs stays the reference and the GPU path.
 *
 * Engine:    `onnxTrainStep({ intraOpThreads })` → a models/ `TrainStep` (+ `optimizer(kind, state?)`).
 * Gradients: `OrtGradients.create(config)` → `.run(weights, pairs, loss)` → { loss, logprobs, grads }.
 * Graphs:    `trainGraph(config, loss)` (graph.ts; pieces in blocks.ts, loss heads in loss.ts).
 * Update:    `ArrayAdam`, `ArrayRMSprop`, `arrayOptimizerFromState`, `clipGradNormInPlace`.
 */
export { EMBEDDING_ROWS_GRAD, embeddingParam, TRAIN_OPSET, trainGraph } from "./graph.js";
export { lossHead, TRAIN_LOSSES, type TrainLoss } from "./loss.js";
export { type GradientsResult, type LossInputs, type NamedArrays, OrtGradients } from "./step.js";
export { type ArrayOptimizer, ArrayAdam, ArrayRMSprop, arrayOptimizerFromState, clipGradNormInPlace, isArrayOptimizer } from "./optimizer.js";
export { type OnnxTrainStep, type OnnxTrainStepOptions, onnxTrainStep } from "./engine.js";
