/**
 * The onnxruntime engine in the shape services/generator/engine.ts's `PolicyEngine` asks for (the generator finds
 * `loadOnnxEngine` by name in models/onnx/index.ts; models/ does not import services/, so the shape is restated
 * here and checked by the generator's own type when it loads us).
 */
import { contextLength } from "../config.js";
import type { TokenPair } from "../batch.js";
import type { SampleOptions } from "../sample.js";
import { createOrtPolicy, type OrtPolicy } from "./policy.js";
import type { ExecutionProviderChoice, GraphOptimizationLevel } from "./session.js";
import type { PolicySource } from "./source.js";

/** Options of `loadOnnxEngine`: the generator's EngineLoadOptions plus the engine.onnx config section. */
export interface OnnxEngineOptions {
  /** onnxruntime intra-op threads (0: onnxruntime's choice). Overrides `onnx.intraOpThreads` when > 0. */
  threads?: number;
  /** Rows per scoring run. @default 32 */
  maxBatch?: number;
  /** config.engine.onnx. */
  onnx?: { intraOpThreads?: number; graphOptimizationLevel?: GraphOptimizationLevel; executionProviders?: readonly ExecutionProviderChoice[]; allowSpinning?: boolean };
  /** Sessions built before the first call. @default ["sample"] */
  prepare?: readonly ("sample" | "score")[];
}

/** An engine over an OrtPolicy: what the generator, `sppo sample` and `sppo score` call. */
export interface OnnxEngine {
  readonly name: "onnxruntime";
  readonly contextLength: number;
  readonly vocabSize: number;
  readonly family: string;
  readonly parameters: number;
  /** The policy underneath (refresh, tokenizer). */
  readonly policy: OrtPolicy;
  sample(promptIds: number[][], options: SampleOptions): Promise<{ tokenIds: number[]; stepLogprobs: number[]; logprob: number; finished: boolean }[]>;
  score(pairs: TokenPair[], options?: { padId?: number }): Promise<{ logprob: number; tokens: number }[]>;
  dispose(): void;
}

/** Wraps a policy as an engine. */
export function engineOf(policy: OrtPolicy, maxBatch = 32): OnnxEngine {
  const config = policy.config;
  return {
    name: policy.name,
    contextLength: contextLength(config),
    vocabSize: config.vocab_size,
    family: config.model_type,
    parameters: policy.parameters,
    policy,
    sample: (promptIds, options) => policy.sample(promptIds, options),
    score: (pairs, options) => policy.score(pairs, { batchSize: maxBatch, padId: options?.padId }),
    dispose() {
      void policy.dispose();
    },
  };
}

/**
 * Loads a model directory (or any PolicySource) into an onnxruntime engine. Fails (ModelFormatError, TypeError)
 * when the directory or the options are bad; the generator's "auto" then falls back to tfjs.
 */
export async function loadOnnxEngine(source: PolicySource, options: OnnxEngineOptions = {}): Promise<OnnxEngine> {
  const threads = options.threads && options.threads > 0 ? options.threads : (options.onnx?.intraOpThreads ?? 0);
  const policy = await createOrtPolicy(source, {
    intraOpThreads: threads,
    graphOptimizationLevel: options.onnx?.graphOptimizationLevel,
    executionProviders: options.onnx?.executionProviders,
    allowSpinning: options.onnx?.allowSpinning,
    prepare: options.prepare,
  });
  return engineOf(policy, options.maxBatch ?? 32);
}
