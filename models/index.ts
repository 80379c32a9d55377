/**
 * The policy engine: decoder-only transformers in TensorFlow.js (GPT-2 and Llama families), real model directories
 * (config.json + model.safetensors + tokenizer.json [+ tokenizer_config.json]), sampling, scoring and training
 * primitives. Everything below works on any family through the `CausalLM` interface.
 *
 * Start-up:     `await initBackend(config.engine.backend)`   tensorflow → wasm → cpu, wasm kernels fixed
 * Load/save:    `loadModel(dir) → { model, tokenizer }`, `saveModel(dir, model, tokenizer, { dtype, maxShardBytes })`
 *               (model.safetensors or shards + model.safetensors.index.json, float32 or bfloat16; read tensor by
 *               tensor: `CheckpointFiles.open(dir)`, `SafetensorsFile.open(path)`)
 * Text → ids:   `encodePrompt(tokenizer, text)` (chat template + BOS), `tokenizer.encode/decode`
 * Sample:       `sampleIds(model, promptIds[], { temperature, topP, topK, maxNewTokens, seed, eosId })`
 *                 → `{ tokenIds, stepLogprobs, logprob, finished }[]`  (logprob at temperature 1)
 *               `sampleText(loaded, prompts[], { k, ...SampleOptions })` → per prompt, k `{ text, ... }`
 * Score:        `scorePairs(model, [{ prompt, response }], { batchSize })` → `{ logprob, tokens }[]`
 * Train:        `sequenceLogProbs(model, makeBatch(pairs)) → tf.Tensor1D [B]` (differentiable),
 *               `valueAndGrads(model, () => loss)`, `clipGradNorm`, `new Adam()/new RMSprop()` with
 *               `.apply(model.params, grads, lr)`, `.state()`/`optimizerFromState()`, `warmupLinearSchedule`.
 * Train step:   `tfjsStep.step(model, optimizer, groups, settings)` → `{ loss, logprobs, gradNorm }` (the pure step of
 *               preference training: layout, loss, micro-batches, clipping, update); `dataParallelStep()` the same
 *               over worker threads. Both implement `TrainStep`, the seam for other engines.
 * 2 cores:      `DataParallel.create(model, { threads })` → `.logProbs(pairs)`, `.weightedLogProbGrads(pairs, w)`
 *               (∇ Σ w_b log π(y_b|x_b) summed over worker-thread shards; w = ∂loss/∂logp chains any loss).
 * Raw weights:  `model.params` (tf.Variable by HF name), `modelTensors(model)`, `modelFromTensors(config, tensors)`.
 *
 * Every forward pass is synchronous and tidy; callers dispose what they are handed (batches, caches, grads).
 */
export { type BackendInfo, type BackendName, initBackend, setWasmMatMulFix, wasmFixesInstalled } from "./backend.js";
export { makeBatch, type TokenBatch, type TokenPair } from "./batch.js";
export {
  type CheckpointEntry,
  CheckpointFiles,
  type CheckpointWriteOptions,
  type CheckpointWritten,
  DEFAULT_MAX_SHARD_BYTES,
  modelWeightsPath,
  WEIGHTS_FILE,
  WEIGHTS_INDEX,
  writeCheckpointFiles,
} from "./checkpoint-files.js";
export { type FloatStorage, floatToBf16, floatToHalf, narrow, widenInPlace } from "./dtype.js";
export { architectureMismatch, configToJson, contextLength, type GPT2Config, gpt2Config, type LlamaConfig, llamaConfig, type ModelConfig, modelArchitecture, modelWidth, normalizeConfig } from "./config.js";
export { GPT2LMHeadModel, gpt2ParamShapes } from "./gpt2.js";
export { createModel, deferredTensors, type LoadedModel, loadModel, modelFromTensors, modelTensors, paramShapes, saveModel, type TensorLookup } from "./io.js";
export { LlamaForCausalLM, llamaParamShapes } from "./llama.js";
export { type CausalLM, disposeCache, type ForwardOptions, type ForwardOutput, type KVCache } from "./model.js";
export { DataParallel, type DataParallelOptions } from "./parallel.js";
export { dataParallelStep } from "./parallel-step.js";
export {
  type DeferredTensor,
  parseSafetensors,
  type RawTensor,
  readSafetensors,
  SafetensorsFile,
  serializeSafetensors,
  type TensorEntry,
  type WritableTensor,
  type WriteOptions,
  writeSafetensors,
} from "./safetensors.js";
export { drawToken, type SampleOptions, type SampleResult, sampleIds } from "./sample.js";
export { type Score, scorePairs, sequenceLogProbs } from "./score.js";
export { encodePrompt, sampleText, scoreText, type TextSample } from "./text.js";
export { type ChatMessage, PolicyTokenizer, wordTokenizerJson } from "./tokenizer.js";
export { Adam, type AdamOptions, clipGradNorm, type NamedGrads, type Optimizer, type OptimizerState, optimizerFromState, RMSprop, type RMSpropOptions, valueAndGrads, warmupLinearSchedule } from "./train.js";
export {
  type MicroBatch,
  type StepResult,
  type StepSample,
  type StepSettings,
  StepSums,
  stepLayout,
  stepPadId,
  stepPairs,
  type TrainStep,
  tfjsStep,
  tfjsTrainStep,
} from "./train-step.js";
