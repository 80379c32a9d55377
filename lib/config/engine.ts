import { z } from "zod";

/** onnxruntime session options of every onnx policy engine: the generator's and `sppo sample`/`sppo score`'s (models/onnx/session.ts). */
const onnxEngineConfigSchema = z
  .object({
    /** Threads of one onnxruntime run; 0 lets onnxruntime choose (one per physical core). @default 0 */
    intraOpThreads: z.number().int().min(0).max(256).default(0),
    /** Graph optimisation at session creation: "disabled", "basic", "extended" or "all". @default "all" */
    graphOptimizationLevel: z.enum(["disabled", "basic", "extended", "all"]).default("all"),
    /**
     * Execution providers in order of preference, CPU always the fallback. "auto" = CUDA where onnxruntime-node's CUDA
     * provider is installed (the GPU image), else CPU; "cuda" fails at start-up where it is not. @default ["auto"]
     */
    executionProviders: z.array(z.enum(["auto", "cuda", "cpu"])).min(1).default(["auto"]),
    /** Let onnxruntime's worker threads spin between runs (off: the JS thread draws tokens between decode steps). @default false */
    allowSpinning: z.boolean().default(false),
    /**
     * Storage of the inference weight matrices: "float32", or "float16" (half the memory, products in float16; the
     * log-prob difference it causes is measured in docs/onnx.md). Training is unaffected. @default "float32"
     */
    dtype: z.enum(["float32", "float16"]).default("float32"),
    /**
     * Let onnxruntime prepack the sampling session's weight matrices into its GEMM layout: faster decode steps, at the
     * cost of a second copy of the weights (the scoring session never prepacks). Off for the largest models on small
     * machines. @default true
     */
    prepackWeights: z.boolean().default(true),
    /**
     * Folder for the float32 weights file the sessions map when the checkpoint cannot be mapped as it is (BF16/F16
     * weights, `dtype: float16`, weights held in memory); "" = the OS temporary folder. A memory-backed folder such as
     * /dev/shm writes faster, but its pages are memory no one can reclaim, count against a container's memory limit,
     * and are not all in the process's RSS (docs/models.md). @default ""
     */
    weightsDir: z.string().default(""),
  })
  .strict();

/**
 * The policy engines, read by every part that runs a policy for inference: the generator service (its onnx and tfjs
 * engines; generator.tfjsBackend and generator.onnxThreads override backend and onnx.intraOpThreads for it) and
 * `sppo sample` / `sppo score`.
 */
export const engineConfigSchema = z
  .object({
    /** tfjs backend: "auto" = native tensorflow (tfjs-node-gpu / tfjs-node) → wasm → cpu. @default "auto" */
    backend: z.enum(["auto", "tensorflow", "wasm", "cpu"]).default("auto"),
    /** Model directory used when a command names none (config.json, model.safetensors, tokenizer.json). @default "assets/policy" */
    modelDir: z.string().min(1).default("assets/policy"),
    /** Rows per forward pass when scoring (padding is masked; larger uses more memory). @default 16 */
    scoreBatchSize: z.number().int().min(1).max(4096).default(16),
    /** onnxruntime sessions of models/onnx (the generator's default engine, and that of `sppo sample` / `sppo score`). */
    onnx: onnxEngineConfigSchema.prefault({}),
  })
  .strict();

export type EngineConfig = z.infer<typeof engineConfigSchema>;
