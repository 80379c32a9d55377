/**
 * The inference engine the generator runs a policy version on, and how one is chosen.
 *
 * An engine holds ONE loaded policy version (a model directory) and does two things: sample continuations of
 * prompts given as token ids, and score (prompt, response) pairs. The generator owns everything around it —
 * tokenization, validation, batching across requests, versions — so an engine only ever sees valid ids that fit its
 * context. Two implementations:
 *  - onnxruntime (services/generator/onnx-engine.ts over models/onnx's OrtPolicy): the default ("auto") wherever
 *    onnxruntime-node loads — native, multi-threaded, ~7× eager PyTorch on CPU (DESIGN §4);
 *  - tfjs (services/generator/tfjs-engine.ts, over models/): always available, the fallback.
 *
 * Contract every engine keeps (the generator's tests check it on the tfjs engine):
 *  - `sample(promptIds, o)`: one sample per row (the generator repeats a prompt K times), rows may have different
 *    lengths; row b draws from `createRng(o.seed, b)` of lib/rng.ts — or from `createRng(o.rows[b].seed,
 *    o.rows[b].stream)` when `rows` is set — through models/sample.ts's `drawToken`, so the same seed, prompts,
 *    options and weights give the same tokens, and engines agree wherever their logits do. A row's tokens do not
 *    depend on the other rows of the run (padding is masked), so rows of different requests may share one run.
 *    `logprob` is Σ log π(token) at temperature 1 (the untempered policy), whatever temperature/top-p/top-k shaped
 *    the draw; with `eosId` set a row stops after drawing it (EOS kept in tokenIds), otherwise after maxNewTokens.
 *  - `score(pairs)`: Σ log π(response token | prompt, earlier response tokens) at temperature 1, prompt tokens
 *    masked; the score of a sampled response equals its sampled `logprob` (up to float rounding).
 *  - Both may be called again before an earlier call resolved when the generator runs more than one batch at once
 *    (config maxConcurrentRuns > 1); an engine that cannot overlap runs must queue them itself.
 *  - `dispose()` frees the weights; no call is made afterwards.
 */
import { log } from "../../lib/log.js";
import type { BackendName, SampleOptions, SampleResult } from "../../models/index.js";
import type { OrtSessionOptions } from "../../models/onnx/session.js";
import { Code, RpcError } from "../../lib/errors.js";

/**
 * Options of one engine run (every row of the run shares them): models/sample.ts SampleOptions — sppo.v1.SamplingParams's
 * temperature, topP, topK and maxNewTokens, the per-row generators (`seed`, or `rows`), `eosId` (undefined: every row
 * runs to maxNewTokens) and `padId` — with the fields the generator always sets required. The generator keeps
 * prompt + maxNewTokens within contextLength.
 */
export type EngineSampleOptions = SampleOptions & Required<Pick<SampleOptions, "temperature" | "topP" | "topK" | "maxNewTokens" | "seed" | "padId">>;

/** One sampled row. */
export interface EngineSample {
  /** Generated ids (EOS included when the row stopped on it). */
  tokenIds: number[];
  /** Σ log π(token) at temperature 1, natural log. */
  logprob: number;
  /** Whether the row ended on EOS (false: cut at maxNewTokens). */
  finished: boolean;
}

/** One (prompt, response) pair to score; the prompt has at least one token. */
export interface ScorePair {
  prompt: number[];
  response: number[];
}

/** A scored pair. */
export interface EngineScore {
  /** Σ log π(response tokens) at temperature 1, natural log. */
  logprob: number;
  /** Response tokens scored. */
  tokens: number;
}

/** A loaded policy version, ready to sample and score. */
export interface PolicyEngine {
  /** Which engine runs ("onnxruntime", "tfjs-wasm", "tfjs-cpu", ...): reported in every response. */
  readonly name: string;
  /** Longest sequence (prompt + response) the model takes. */
  readonly contextLength: number;
  /** Ids are valid in [0, vocabSize). */
  readonly vocabSize: number;
  /** Model family ("gpt2", "llama"). */
  readonly family: string;
  /** Number of parameters. */
  readonly parameters: number;
  sample(promptIds: number[][], options: EngineSampleOptions): Promise<EngineSample[]>;
  score(pairs: ScorePair[], options: { padId: number }): Promise<EngineScore[]>;
  dispose(): void;
}

/** Options for loading an engine (each engine takes what applies to it): the config's engine section, resolved. */
export interface EngineLoadOptions {
  /** tfjs backend ("auto": tensorflow → wasm → cpu): engine.backend, or generator.tfjsBackend when set. */
  tfjsBackend?: BackendName;
  /** onnxruntime sessions: engine.onnx, its intraOpThreads replaced by generator.onnxThreads when set. */
  onnx?: OrtSessionOptions;
  /** Rows per forward pass when scoring. */
  maxBatch?: number;
}

/** An engine's samples from a sampler's results (the per-step log-probs are not part of an EngineSample). */
export function engineSamples(results: readonly SampleResult[]): EngineSample[] {
  return results.map((r) => ({ tokenIds: r.tokenIds, logprob: r.logprob, finished: r.finished }));
}

/** Loads the model directory `dir` (config.json, model.safetensors, ...) into an engine. */
export type EngineLoader = (dir: string, options: EngineLoadOptions) => Promise<PolicyEngine>;

/** The onnx engine's loader, or why there is none (onnxruntime-node's native binding may be missing). */
export async function findOnnxLoader(): Promise<{ loader?: EngineLoader; reason?: string }> {
  try {
    const { loadOnnxEngine } = await import("./onnx-engine.js");
    return { loader: loadOnnxEngine };
  } catch (err) {
    return { reason: `onnxruntime is not available (${(err as Error).message.split("\n")[0]})` };
  }
}

/**
 * Loads `dir` on the engine `choice`: "tfjs", "onnx" (fails when onnxruntime cannot load it), or "auto" (onnx when
 * onnxruntime loads, else tfjs, with the reason logged). An RpcError of kind "model-format" (a bad directory) is thrown as is.
 */
export async function loadEngine(choice: "auto" | "onnx" | "tfjs", dir: string, options: EngineLoadOptions = {}): Promise<PolicyEngine> {
  if (choice !== "tfjs") {
    const { loader, reason } = await findOnnxLoader();
    if (loader) {
      try {
        return await loader(dir, options);
      } catch (err) {
        // A broken model directory is broken for every engine: say so instead of trying the next one.
        if (choice === "onnx" || RpcError.is(err, "model-format")) throw err;
        log.warn({ err, dir }, "generator: the onnx engine could not load the policy; using tfjs");
      }
    } else if (choice === "onnx") {
      throw new RpcError(Code.FAILED_PRECONDITION, `engine "onnx": ${reason}`);
    } else {
      log.info({ reason }, "generator: no onnx engine; using tfjs");
    }
  }
  const { loadTfjsEngine } = await import("./tfjs-engine.js");
  return loadTfjsEngine(dir, options);
}
