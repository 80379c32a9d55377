/**
 * Where a policy's weights come from: a model directory (read straight from config.json + model.safetensors or its
 * shards, with no tfjs model built), a loaded tfjs model, or a config with raw tensors (what the optimizer publishes).
 * `openSource` opens any of them lazily: a directory's tensors are read only when asked (or never, when onnxruntime
 * maps the checkpoint itself), a tfjs model's variables one at a time.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type ModelConfig, normalizeConfig } from "../config.js";
import type { LoadedModel } from "../io.js";
import { CheckpointFiles } from "../checkpoint-files.js";
import { deferredTensors, modelTensors, paramShapes, readModelJson, type TensorLookup } from "../io.js";
import type { CausalLM } from "../model.js";
import type { RawTensor } from "../safetensors.js";
import { PolicyTokenizer } from "../tokenizer.js";
import { kindError, RpcError } from "../../lib/errors.js";

/** A config and its weights by HF name. */
export interface PolicyWeights {
  config: ModelConfig;
  weights: ReadonlyMap<string, RawTensor>;
}

/** What a policy can be built from. */
export type PolicySource = string | LoadedModel | CausalLM | PolicyWeights;

/**
 * The parameters of `config` picked from a checkpoint's tensors, by HF name (GPT-2 checkpoints saved from
 * `GPT2Model` lack the `transformer.` prefix; both spellings are read). Buffers and a tied head are left out.
 */
export function pickParams(config: ModelConfig, tensors: TensorLookup, file: string): Map<string, RawTensor> {
  const out = new Map<string, RawTensor>();
  for (const [name, shape] of paramShapes(config)) {
    const short = name.startsWith("transformer.") ? name.slice("transformer.".length) : undefined;
    const t = tensors.get(name) ?? (short ? tensors.get(short) : undefined);
    if (!t) throw kindError("model-format", `${file}: tensor ${name} is missing (the config needs it for ${config.model_type})`);
    if (t.shape.join() !== shape.join()) throw kindError("model-format", `${file}: tensor ${name} has shape [${t.shape}], config.json implies [${shape}]`);
    if (!(t.data instanceof Float32Array)) throw kindError("model-format", `${file}: tensor ${name} has an integer dtype, expected a float`);
    out.set(name, t);
  }
  return out;
}

/** The tokenizer of model directory `dir`, when it has a tokenizer.json. */
function readTokenizer(dir: string): PolicyTokenizer | undefined {
  const tokPath = join(dir, "tokenizer.json");
  if (!existsSync(tokPath)) return undefined;
  const cfgPath = join(dir, "tokenizer_config.json");
  try {
    return new PolicyTokenizer(readModelJson(tokPath), existsSync(cfgPath) ? readModelJson(cfgPath) : {});
  } catch (err) {
    if (RpcError.is(err, "model-format")) throw err;
    throw kindError("model-format", `${tokPath}: cannot build the tokenizer (${(err as Error).message})`);
  }
}

/** Reads a model directory's config, every weight and (when present) tokenizer without building a tfjs model. */
export function readPolicyDir(dir: string): PolicyWeights & { tokenizer?: PolicyTokenizer } {
  const opened = openSource(dir);
  try {
    return { config: opened.config, weights: pickParams(opened.config, opened.weights, opened.files!.path), tokenizer: opened.tokenizer };
  } finally {
    opened.close();
  }
}

/** A source opened for reading: its config and tokenizer now, its weights on demand. Close it when done. */
export interface OpenedSource {
  config: ModelConfig;
  tokenizer?: PolicyTokenizer;
  /** The weights by HF name; reading one may read a file or tfjs memory. */
  weights: TensorLookup;
  /** A model directory's weight files (headers read, tensors not), when the source is a directory. */
  files?: CheckpointFiles;
  close(): void;
}

/**
 * Opens any source without reading its weights: a directory's config, tokenizer (unless `options.tokenizer` is false:
 * a real tokenizer takes a while to build) and safetensors headers (pickle files refused with how to convert them), a
 * tfjs model's variables as deferred reads, raw weights as they are.
 */
export function openSource(source: PolicySource, options: { tokenizer?: boolean } = {}): OpenedSource {
  if (typeof source === "string") {
    const configPath = join(source, "config.json");
    const config = normalizeConfig(readModelJson(configPath), configPath);
    const files = CheckpointFiles.open(source); // refuses pickle-based weights with a clear message
    try {
      const tokenizer = options.tokenizer === false ? undefined : readTokenizer(source);
      return { config, tokenizer, weights: files, files, close: () => files.close() };
    } catch (err) {
      files.close();
      throw err;
    }
  }
  const lazy = (model: CausalLM): TensorLookup => {
    const deferred = deferredTensors(model);
    return { keys: () => deferred.keys(), has: (n) => deferred.has(n), get: (n) => (deferred.has(n) ? { shape: deferred.get(n)!.shape, data: deferred.get(n)!.read() } : undefined) };
  };
  if (isLoaded(source)) return { config: source.model.config, tokenizer: source.tokenizer, weights: lazy(source.model), close() {} };
  if (isWeights(source)) return { config: source.config, weights: source.weights, close() {} };
  return { config: source.config, weights: lazy(source), close() {} };
}

function isLoaded(source: PolicySource): source is LoadedModel {
  return typeof source === "object" && "model" in source && "dir" in source;
}

function isWeights(source: PolicySource): source is PolicyWeights {
  return typeof source === "object" && "weights" in source && "config" in source;
}

/** Config, every weight and tokenizer of any source, read into memory (small models; `openSource` reads lazily). */
export function resolveSource(source: PolicySource): PolicyWeights & { tokenizer?: PolicyTokenizer } {
  if (typeof source === "string") return readPolicyDir(source);
  if (isLoaded(source)) return { config: source.model.config, weights: modelTensors(source.model), tokenizer: source.tokenizer };
  if (isWeights(source)) return { config: source.config, weights: source.weights };
  return { config: source.config, weights: modelTensors(source) };
}
