/**
 * The training engine the optimizer's config asks for (`optimizer.engine`, `optimizer.trainThreads`): a models/
 * `TrainStep` for the Trainer. Called where the trainer is opened (the worker thread, or the server's thread), after
 * the tfjs backend is initialised; the caller closes the engine after the trainer.
 */
import type { OptimizerConfig } from "../../lib/config/optimizer.js";
import type { BackendInfo } from "../../models/backend.js";
import { dataParallelStep, type TrainStep, tfjsStep } from "../../models/index.js";
import { onnxTrainStep } from "../../models/onnx-train/index.js";

/**
 * `auto`: tfjs on `@tensorflow/tfjs-node-gpu` (the GPU path), onnxruntime everywhere else — also on the CPU build
 * `@tensorflow/tfjs-node`, whose backend is also called "tensorflow" (docs/training-speed.md: onnxruntime is the fast
 * exact CPU path).
 */
export function trainEngineChoice(engine: OptimizerConfig["engine"], backend: Pick<BackendInfo, "nativePackage">): Exclude<OptimizerConfig["engine"], "auto"> {
  if (engine !== "auto") return engine;
  return backend.nativePackage === "@tensorflow/tfjs-node-gpu" ? "tfjs" : "onnxruntime";
}

/** The engine of `config` on the initialised tfjs backend `backend`. */
export function createTrainEngine(config: Pick<OptimizerConfig, "engine" | "trainThreads">, backend: Pick<BackendInfo, "nativePackage">): TrainStep {
  const choice = trainEngineChoice(config.engine, backend);
  switch (choice) {
    case "tfjs":
      return tfjsStep;
    case "data-parallel":
      return dataParallelStep({ threads: config.trainThreads || undefined });
    case "onnxruntime":
      return onnxTrainStep({ intraOpThreads: config.trainThreads });
  }
}
