/**
 * Where a policy's weights come from: a model directory (read straight from config.json + model.safetensors, with
 * no tfjs model built), a loaded tfjs model, or a config with raw tensors (what the optimizer publishes).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type ModelConfig, normalizeConfig } from "../config.js";
import type { LoadedModel } from "../io.js";
import { modelTensors, modelWeightsPath, paramShapes, readModelJson } from "../io.js";
import type { CausalLM } from "../model.js";
import { type RawTensor, readSafetensors } from "../safetensors.js";
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
export function pickParams(config: ModelConfig, tensors: ReadonlyMap<string, RawTensor>, file: string): Map<string, RawTensor> {
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

/** Reads a model directory's config, weights and (when present) tokenizer without building a tfjs model. */
export function readPolicyDir(dir: string): PolicyWeights & { tokenizer?: PolicyTokenizer } {
  const configPath = join(dir, "config.json");
  const config = normalizeConfig(readModelJson(configPath), configPath);
  const weightsPath = modelWeightsPath(dir); // refuses pickle-based weights with a clear message
  const weights = pickParams(config, readSafetensors(weightsPath), weightsPath);
  const tokPath = join(dir, "tokenizer.json");
  if (!existsSync(tokPath)) return { config, weights };
  const cfgPath = join(dir, "tokenizer_config.json");
  try {
    return { config, weights, tokenizer: new PolicyTokenizer(readModelJson(tokPath), existsSync(cfgPath) ? readModelJson(cfgPath) : {}) };
  } catch (err) {
    if (RpcError.is(err, "model-format")) throw err;
    throw kindError("model-format", `${tokPath}: cannot build the tokenizer (${(err as Error).message})`);
  }
}

function isLoaded(source: PolicySource): source is LoadedModel {
  return typeof source === "object" && "model" in source && "dir" in source;
}

function isWeights(source: PolicySource): source is PolicyWeights {
  return typeof source === "object" && "weights" in source && "config" in source;
}

/** Config, weights and tokenizer of any source (a tfjs model's variables are read once, here). */
export function resolveSource(source: PolicySource): PolicyWeights & { tokenizer?: PolicyTokenizer } {
  if (typeof source === "string") return readPolicyDir(source);
  if (isLoaded(source)) return { config: source.model.config, weights: modelTensors(source.model), tokenizer: source.tokenizer };
  if (isWeights(source)) return { config: source.config, weights: source.weights };
  return { config: source.config, weights: modelTensors(source) };
}
