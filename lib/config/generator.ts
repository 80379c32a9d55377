import { z } from "zod";
import { generatorSamplingSchema } from "./sampling.js";

/** Inference engines of the generator (services/generator/engine.ts). */
export const GENERATOR_ENGINES = [
  /** onnxruntime (models/onnx) where it is available, else tfjs. */
  "auto",
  /** onnxruntime-node via models/onnx; start-up fails when it is not available. */
  "onnx",
  /** The tfjs policy engine of models/ on the backend `tfjsBackend` picks. */
  "tfjs",
] as const;

export type GeneratorEngineChoice = (typeof GENERATOR_ENGINES)[number];

/** The generator service (services/generator): which policy, which engine, and how much work it accepts. */
export const generatorConfigSchema = z
  .object({
    /** The base policy (version 0): a model directory with config.json, model.safetensors, tokenizer.json. @default "assets/policy" */
    modelDir: z.string().min(1).default("assets/policy"),
    /** Inference engine: "auto" takes onnxruntime when models/onnx provides it, else tfjs. @default "auto" */
    engine: z.enum(GENERATOR_ENGINES).default("auto"),
    /** tfjs backend of this generator's tfjs engine, overriding engine.backend ("auto": tensorflow → wasm → cpu). @default unset: engine.backend */
    tfjsBackend: z.enum(["auto", "tensorflow", "wasm", "cpu"]).optional(),
    /** Sampling defaults for the SamplingParams fields a request leaves unset (lib/config/sampling.ts): temperature
     * 0.7, topP 0.9, topK 0, maxNewTokens 64, stopOnEos true by default. */
    sampling: generatorSamplingSchema.prefault({}),
    /** Largest max_new_tokens a request may ask for. @default 1024 */
    maxNewTokensLimit: z.number().int().min(1).max(1_000_000).default(1024),
    /** Largest K (num_samples) of one Generate request. @default 16 */
    maxSamples: z.number().int().min(1).max(4096).default(16),
    /** Most rows (samples, or scored responses) in one engine run; concurrent requests share runs up to this. Must be ≥ maxSamples. @default 32 */
    maxBatch: z.number().int().min(1).max(65_536).default(32),
    /**
     * How long the oldest batchable request (unseeded Generate, Score) waits for others to share its engine run while
     * the batch is not full, in ms; requests of a gRPC stream arrive over several event-loop turns. @default 2
     */
    maxWaitMs: z.number().min(0).max(10_000).default(2),
    /** Engine runs in flight at once (tfjs runs on the event loop, so more than 1 only helps async engines). @default 1 */
    maxConcurrentRuns: z.number().int().min(1).max(64).default(1),
    /** Requests waiting for the engine, over all streams; beyond this a request is answered RESOURCE_EXHAUSTED. @default 256 */
    maxQueuedRequests: z.number().int().min(1).max(1_000_000).default(256),
    /** Unanswered requests per stream; the server stops reading a stream at this (backpressure on the client). @default 64 */
    maxInFlightPerStream: z.number().int().min(1).max(100_000).default(64),
    /** Policy versions held in memory, the base (version 0) included: e.g. 3 = base, previous, current. @default 3 */
    versionsInMemory: z.number().int().min(2).max(64).default(3),
    /** Where pulled policy versions are written (one `v<N>` folder each); "" = a temporary folder removed at close. @default "" */
    weightsDir: z.string().default(""),
    /** Optimizer target LoadPolicy pulls from when its request leaves `source` empty ("dns:///optimizer:50053"). @default "" */
    optimizerTarget: z.string().default(""),
    /**
     * When a Generate or Score request pins a version this generator does not hold, pull it from `optimizerTarget`
     * (GetWeights, verified, as LoadPolicy does) and then serve the request, rather than answer FAILED_PRECONDITION:
     * a replica the loop's one LoadPolicy did not reach, or a restarted one, serves every published version. A pulled
     * version does not become current and counts towards versionsInMemory. Needs optimizerTarget. @default true
     */
    pullPinnedVersions: z.boolean().default(true),
    /** Deadline of one weight pull (GetWeights stream), in ms. @default 10 min */
    loadTimeoutMs: z.number().int().positive().default(600_000),
    /** Bytes per chunk asked of GetWeights (the server may cap it). @default 1 MiB */
    chunkBytes: z.number().int().min(1024).max(64 * 1024 * 1024).default(1 << 20),
    /** onnxruntime intra-op threads of this generator's onnx engine, overriding engine.onnx.intraOpThreads; 0 lets onnxruntime choose. @default unset: engine.onnx.intraOpThreads */
    onnxThreads: z.number().int().min(0).max(256).optional(),
  })
  .strict()
  .superRefine((value, ctx) => {
    if (value.maxBatch < value.maxSamples) {
      ctx.addIssue({ code: "custom", path: ["maxBatch"], message: `must be ≥ maxSamples (${value.maxSamples}): a request's K samples run in one batch` });
    }
    if (value.sampling.maxNewTokens > value.maxNewTokensLimit) {
      ctx.addIssue({ code: "custom", path: ["sampling", "maxNewTokens"], message: `must be ≤ maxNewTokensLimit (${value.maxNewTokensLimit})` });
    }
  });

export type GeneratorConfig = z.infer<typeof generatorConfigSchema>;
