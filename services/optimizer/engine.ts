/**
 * The training engine the optimizer's config asks for (`optimizer.engine`, `optimizer.trainThreads`): a models/
 * `TrainStep` for the Trainer. Called where the trainer is opened (the worker thread, or the server's thread), after
 * the tfjs backend is initialised; the caller closes the engine after the trainer.
 */
import type { OptimizerConfig } from "../../lib/config/optimizer.js";
import { dataParallelStep, type TrainStep, tfjsStep } from "../../models/index.js";
import { onnxTrainStep } from "../../models/onnx-train/index.js";

/** The engine of `config` on the tfjs backend `backend` (its resolved name: "tensorflow", "wasm", "cpu"). */
export function createTrainEngine(config: Pick<OptimizerConfig, "engine" | "trainThreads">, backend: string): TrainStep {
  const choice = config.engine === "auto" ? (backend === "tensorflow" ? "tfjs" : "onnxruntime") : config.engine;
  switch (choice) {
    case "tfjs":
      return tfjsStep;
    case "data-parallel":
      return dataParallelStep({ threads: config.trainThreads || undefined });
    case "onnxruntime":
      return onnxTrainStep({ intraOpThreads: config.trainThreads });
  }
}
