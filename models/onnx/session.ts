/**
 * onnxruntime sessions for policy graphs: the session options the engine config exposes (threads, graph
 * optimisation level, execution providers) and which execution providers this installation can run.
 *
 * onnxruntime-node bundles its CPU provider. The CUDA provider is a separate shared library that the package's
 * install script fetches (the GPU image runs it; offline installs skip it), so "cuda" is offered only when that
 * library sits beside the binding.
 */
import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as ort from "onnxruntime-node";

/** Graph optimisation levels of onnxruntime, weakest first. */
export const GRAPH_OPTIMIZATION_LEVELS = ["disabled", "basic", "extended", "all"] as const;
export type GraphOptimizationLevel = (typeof GRAPH_OPTIMIZATION_LEVELS)[number];

/** Execution providers the engine knows how to ask for; "auto" is CUDA where installed, else CPU. */
export const EXECUTION_PROVIDERS = ["auto", "cuda", "cpu"] as const;
export type ExecutionProviderChoice = (typeof EXECUTION_PROVIDERS)[number];

export interface OrtSessionOptions {
  /** Threads of one run; 0 lets onnxruntime choose (one per physical core). @default 0 */
  intraOpThreads?: number;
  /** How much onnxruntime rewrites the graph at load (constant folding, fusions). @default "all" */
  graphOptimizationLevel?: GraphOptimizationLevel;
  /**
   * Providers in order of preference; CPU is always appended as the fallback for operators a provider lacks.
   * "cuda" fails at session creation when this installation has no CUDA provider. @default ["auto"]
   */
  executionProviders?: readonly ExecutionProviderChoice[];
  /**
   * Whether onnxruntime's worker threads spin between runs. Off by default: between two decode steps the JS thread
   * draws the next tokens, and spinning workers take the cores it needs (measured: a 2-core machine samples faster
   * without). @default false
   */
  allowSpinning?: boolean;
  /**
   * Let onnxruntime prepack constant weight matrices into the layout of its GEMM kernels (a private copy per
   * session). Fast where products have few rows (decode steps); off, a session reads its weights in place (from
   * mapped external data: no copy). @default true
   */
  prepackWeights?: boolean;
  /** Folder that external-data locations are relative to, for a model given as bytes (weights-file.ts). */
  externalDataFolder?: string;
}

let cudaInstalled: boolean | undefined;

/** Whether onnxruntime-node's CUDA provider library is installed beside the native binding. */
export function cudaProviderInstalled(): boolean {
  if (cudaInstalled !== undefined) return cudaInstalled;
  cudaInstalled = false;
  try {
    const require = createRequire(import.meta.url);
    const root = join(dirname(require.resolve("onnxruntime-node")), "..", "bin");
    // bin/napi-v*/<platform>/<arch>/libonnxruntime_providers_cuda.so
    for (const napi of readdirSync(root)) {
      const dir = join(root, napi, process.platform, process.arch);
      if (existsSync(join(dir, "libonnxruntime_providers_cuda.so")) || existsSync(join(dir, "onnxruntime_providers_cuda.dll"))) cudaInstalled = true;
    }
  } catch {
    cudaInstalled = false;
  }
  return cudaInstalled;
}

/** The providers a session will be created with, "auto" resolved; CPU always last. */
export function resolveExecutionProviders(choices: readonly ExecutionProviderChoice[] = ["auto"]): ("cuda" | "cpu")[] {
  const out: ("cuda" | "cpu")[] = [];
  for (const choice of choices) {
    const ep = choice === "auto" ? (cudaProviderInstalled() ? "cuda" : "cpu") : choice;
    if (ep === "cuda" && !cudaProviderInstalled()) {
      throw new TypeError("executionProviders: \"cuda\" was asked for but onnxruntime-node's CUDA provider is not installed (use \"auto\" or \"cpu\")");
    }
    if (!out.includes(ep)) out.push(ep);
  }
  if (!out.includes("cpu")) out.push("cpu");
  return out;
}

/** Checks the options once, naming the one at fault, and returns onnxruntime's SessionOptions. */
export function sessionOptions(options: OrtSessionOptions = {}): ort.InferenceSession.SessionOptions {
  const threads = options.intraOpThreads ?? 0;
  if (!Number.isInteger(threads) || threads < 0) throw new TypeError(`intraOpThreads must be an integer ≥ 0, got ${threads}`);
  const level = options.graphOptimizationLevel ?? "all";
  if (!GRAPH_OPTIMIZATION_LEVELS.includes(level)) throw new TypeError(`graphOptimizationLevel must be one of ${GRAPH_OPTIMIZATION_LEVELS.join(", ")}, got ${level}`);
  for (const ep of options.executionProviders ?? []) {
    if (!EXECUTION_PROVIDERS.includes(ep)) throw new TypeError(`executionProviders: unknown provider ${ep} (${EXECUTION_PROVIDERS.join(", ")})`);
  }
  const session: Record<string, unknown> = {
    intra_op: { allow_spinning: options.allowSpinning ? "1" : "0" },
    disable_prepacking: options.prepackWeights === false ? "1" : "0",
  };
  if (options.externalDataFolder) session.model_external_initializers_file_folder_path = options.externalDataFolder;
  const out: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: level,
    executionProviders: resolveExecutionProviders(options.executionProviders),
    // Flattened by the Node binding into session config entries ("session.intra_op.allow_spinning", ...).
    extra: { session },
  };
  if (threads > 0) out.intraOpNumThreads = threads;
  return out;
}

/** A session over serialized model bytes. */
export function createSession(bytes: Uint8Array, options: OrtSessionOptions = {}): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(bytes, sessionOptions(options));
}
