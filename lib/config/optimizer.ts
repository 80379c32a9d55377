import { z } from "zod";
import { OPTIMIZER_ALGORITHMS } from "../sppo/algorithms.js";

export { OPTIMIZER_ALGORITHMS, type OptimizerAlgorithm } from "../sppo/algorithms.js";

/** Paper β = 1e-3, i.e. η = 1/β = 1000. */
export const DEFAULT_ETA = 1000;

const optimizerObject = z
  .object({
    /** Loss: "sppo" (paper eq. 4.7), "sppo_hard" (TRL), "dpo", "ipo". @default "sppo" */
    algorithm: z.enum(OPTIMIZER_ALGORITHMS).default("sppo"),
    /** Responses per prompt the loss sees: argmax/argmin win rate (official) or all K (sppo only). @default "chosen_rejected" */
    pairSelection: z.enum(["chosen_rejected", "all"]).default("chosen_rejected"),
    /** η of the SPPO target η(P̂ − ½); the pairwise losses use β = 1/η. Give `eta` or `beta`, not both. @default 1000 */
    eta: z.number().positive().optional(),
    /** β = 1/η, the paper's and TRL's parameterisation (paper: 1e-3). */
    beta: z.number().positive().optional(),
    /** Peak learning rate (official code: 5e-7). @default 5e-7 */
    learningRate: z.number().nonnegative().default(5e-7),
    /** "rmsprop" (official code, torch defaults α = 0.99, ε = 1e-8) or "adam". @default "rmsprop" */
    optimizer: z.enum(["rmsprop", "adam"]).default("rmsprop"),
    /** Responses per optimizer step, across accumulation (official: 64 chosen/rejected pairs = 128). @default 128 */
    batchSize: z.number().int().min(1).default(128),
    /** Micro-batches per optimizer step; gradients are summed, weighted by micro-batch size. @default 1 */
    gradientAccumulation: z.number().int().min(1).default(1),
    /** Fraction of an iteration's steps spent warming the learning rate up from 0, then linear decay to 0. @default 0.1 */
    warmupRatio: z.number().min(0).max(1).default(0.1),
    /** Passes over each iteration's data (official: 1). @default 1 */
    epochs: z.number().int().min(1).default(1),
    /** Global gradient-norm clip (HF default). @default 1.0 */
    maxGradNorm: z.number().positive().default(1.0),
    /** Seed of the trainer's RNG (shuffling between epochs). @default 42 */
    seed: z.number().int().min(0).default(42),
    /** The base policy (version 0): an HF model directory (config.json, model.safetensors, tokenizer.json). @default "assets/policy" */
    modelDir: z.string().min(1).default("assets/policy"),
    /** Where published policy versions are written, one directory per version (v1, v2, ...). @default "runs/optimizer/policies" */
    policyDir: z.string().min(1).default("runs/optimizer/policies"),
    /** Where checkpoints are written (one directory each, written atomically). @default "runs/optimizer/checkpoints" */
    checkpointDir: z.string().min(1).default("runs/optimizer/checkpoints"),
    /** Also checkpoint every this many optimizer steps; 0 only at iteration ends and on request. @default 0 */
    checkpointEverySteps: z.number().int().min(0).default(0),
    /** Checkpoints kept on disk; older ones are deleted after a new one is written. @default 3 */
    keepCheckpoints: z.number().int().min(1).default(3),
    /**
     * Continue at start-up from the newest valid checkpoint of the run the optimizer last worked for (in
     * `checkpointDir`, or `checkpointDir/runs/<run id>/`). A run that comes back later continues from its own
     * checkpoints whatever this says. @default true
     */
    resume: z.boolean().default(true),
    /**
     * A checkpoint trained from another base model than `modelDir` (at start-up, or in the folder of a run that asks
     * for it): "refuse" fails with one line naming both models; "fresh" leaves it on disk, unused, and starts from
     * `modelDir`. Never resumed silently. @default "refuse"
     */
    baseMismatch: z.enum(["refuse", "fresh"]).default("refuse"),
    /** tfjs backend for training: "auto" tries tensorflow → wasm → cpu. @default "auto" */
    backend: z.enum(["auto", "tensorflow", "wasm", "cpu"]).default("auto"),
    /**
     * Training engine. "onnxruntime" (models/onnx-train): each micro-batch's forward and backward pass is one
     * onnxruntime run on every core, the update runs in JS; exact to float rounding against tfjs, and several times
     * faster on CPU. "tfjs": the reference, on `backend` (with tfjs-node-gpu, the GPU path). "data-parallel": tfjs over
     * worker threads. "auto": onnxruntime, unless `backend` resolves to native TensorFlow from @tensorflow/tfjs-node-gpu, then tfjs. A resumed run
     * keeps its engine (the engines agree to float rounding, not bit for bit). @default "auto"
     */
    engine: z.enum(["auto", "onnxruntime", "tfjs", "data-parallel"]).default("auto"),
    /** Threads of the onnxruntime and data-parallel engines; 0 = one per core. @default 0 */
    trainThreads: z.number().int().min(0).default(0),
    /**
     * Train in a worker thread, so that multi-second steps never block the server's event loop (health probes,
     * keepalive pings, GetWeights). Off: the trainer runs in the server's thread (tests, tiny models). @default true
     */
    trainInWorker: z.boolean().default(true),
    /** Telemetry `run_id` of the events this optimizer emits; "" uses the id of the run being trained. @default "" */
    runId: z.string().default(""),
  })
  .strict()
  .superRefine((value, ctx) => {
    if (value.eta !== undefined && value.beta !== undefined && Math.abs(value.eta * value.beta - 1) > 1e-9) {
      ctx.addIssue({ code: "custom", path: ["beta"], message: `give eta or beta (= 1/eta), not both: ${value.eta} × ${value.beta} ≠ 1` });
    }
    if (value.pairSelection === "all" && value.algorithm !== "sppo") {
      ctx.addIssue({ code: "custom", path: ["pairSelection"], message: `"all" works with algorithm "sppo" only (${value.algorithm} needs pairs)` });
    }
  });

/** The optimizer service (services/optimizer): loss, hyper-parameters, where weights and checkpoints go. */
export const optimizerConfigSchema = optimizerObject.transform((value) => ({
  ...value,
  /** η resolved from `eta`, else 1/`beta`, else DEFAULT_ETA. */
  eta: value.eta ?? (value.beta !== undefined ? 1 / value.beta : DEFAULT_ETA),
}));

export type OptimizerConfig = z.output<typeof optimizerConfigSchema>;
