/**
 * Loading and saving a model directory in the Hugging Face layout: `config.json`, `model.safetensors` (or shards and
 * `model.safetensors.index.json`, see checkpoint-files.ts), `tokenizer.json` and (optional) `tokenizer_config.json`.
 * Loading is a copy by name with a shape check per tensor, read one tensor at a time (each read array is dropped once
 * its tfjs variable holds it, so a load never holds the checkpoint twice);
 * every problem is an RpcError of kind "model-format" (lib/errors.ts) naming the file and tensor. Nothing from the directory is executed: weights are
 * read only from safetensors (a header and raw numbers), pickle-based PyTorch files are refused (`modelWeightsPath`), JSON
 * is parsed as data, and chat templates are interpreted by @huggingface/jinja (models/tokenizer.ts).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { configToJson, type ModelConfig, normalizeConfig } from "./config.js";
import { GPT2LMHeadModel, gpt2ParamShapes } from "./gpt2.js";
import { LlamaForCausalLM, llamaParamShapes } from "./llama.js";
import type { CausalLM } from "./model.js";
import { CheckpointFiles, type CheckpointWriteOptions, writeCheckpointFiles } from "./checkpoint-files.js";
import type { DeferredTensor, RawTensor } from "./safetensors.js";
import { PolicyTokenizer } from "./tokenizer.js";
import { kindError, RpcError } from "../lib/errors.js";

/** A loaded model directory. */
export interface LoadedModel {
  model: CausalLM;
  /** Absent when the directory has no tokenizer.json (id-level use only). */
  tokenizer?: PolicyTokenizer;
  dir: string;
}

/** Names and shapes of a config's parameters. */
export function paramShapes(config: ModelConfig): [string, number[]][] {
  return config.model_type === "gpt2" ? gpt2ParamShapes(config) : llamaParamShapes(config);
}

/** Buffers and aliases that checkpoints carry but that are not parameters (ignored when present). */
function ignorable(name: string, config: ModelConfig): boolean {
  if (/\.attn\.(masked_)?bias$/.test(name) || name.endsWith("rotary_emb.inv_freq")) return true;
  // A tied LM head is stored by some writers; it is the embedding, so it is not loaded twice.
  return name === "lm_head.weight" && config.tie_word_embeddings;
}

/** Creates a model of the config's family over the given parameters (or fresh ones from `seed`). */
export function createModel(config: ModelConfig, params?: Map<string, tf.Variable>, seed = 0): CausalLM {
  return config.model_type === "gpt2" ? new GPT2LMHeadModel(config, params, seed) : new LlamaForCausalLM(config, params, seed);
}

/**
 * Tensors by name: a Map, or a lazy reader (CheckpointFiles) whose `get` reads the tensor when asked.
 */
export type TensorLookup = Pick<ReadonlyMap<string, RawTensor>, "get" | "has" | "keys">;

/**
 * Builds a model from raw tensors by HF name, reading each once (from a lazy source, one at a time). GPT-2
 * checkpoints saved from `GPT2Model` lack the `transformer.` prefix; both spellings load. `file` names the source in
 * errors.
 */
export function modelFromTensors(config: ModelConfig, tensors: TensorLookup, file = "model.safetensors"): CausalLM {
  const expected = paramShapes(config);
  const lookup = (name: string): [string, RawTensor | undefined] => {
    if (tensors.has(name)) return [name, tensors.get(name)];
    if (name.startsWith("transformer.") && tensors.has(name.slice("transformer.".length))) {
      const short = name.slice("transformer.".length);
      return [short, tensors.get(short)];
    }
    return [name, undefined];
  };
  const used = new Set<string>();
  const params = new Map<string, tf.Variable>();
  try {
    for (const [name, shape] of expected) {
      const [found, t] = lookup(name);
      if (!t) throw kindError("model-format", `${file}: tensor ${name} is missing (the config needs it for ${config.model_type})`);
      if (t.shape.join() !== shape.join()) throw kindError("model-format", `${file}: tensor ${name} has shape [${t.shape}], config.json implies [${shape}]`);
      if (!(t.data instanceof Float32Array)) throw kindError("model-format", `${file}: tensor ${name} has an integer dtype, expected a float`);
      used.add(found);
      params.set(name, tf.tidy(() => tf.variable(tf.tensor(t.data, shape, "float32"), true)));
    }
    for (const name of tensors.keys()) {
      if (!used.has(name) && !ignorable(name, config)) throw kindError("model-format", `${file}: tensor ${name} is not a parameter of this ${config.model_type} config`);
    }
  } catch (err) {
    for (const p of params.values()) p.dispose();
    throw err;
  }
  return createModel(config, params);
}

/** Reads a JSON file of a model directory; a missing or broken file is a "model-format" error naming it. */
export function readModelJson(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw kindError("model-format", `${path}: cannot read it (${(err as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw kindError("model-format", `${path}: not valid JSON (${(err as Error).message})`);
  }
}

export { modelWeightsPath } from "./checkpoint-files.js";

/** Loads a model directory. The tokenizer is optional (a directory of weights alone loads as ids-only). */
export function loadModel(dir: string): LoadedModel {
  const configPath = join(dir, "config.json");
  const config = normalizeConfig(readModelJson(configPath), configPath);
  const weights = CheckpointFiles.open(dir);
  let model: CausalLM;
  try {
    model = modelFromTensors(config, weights, weights.path);
  } finally {
    weights.close();
  }
  let tokenizer: PolicyTokenizer | undefined;
  const tokPath = join(dir, "tokenizer.json");
  if (existsSync(tokPath)) {
    const cfgPath = join(dir, "tokenizer_config.json");
    try {
      tokenizer = new PolicyTokenizer(readModelJson(tokPath), existsSync(cfgPath) ? readModelJson(cfgPath) : {});
    } catch (err) {
      model.dispose();
      if (RpcError.is(err, "model-format")) throw err;
      throw kindError("model-format", `${tokPath}: cannot build the tokenizer (${(err as Error).message})`);
    }
  }
  return { model, tokenizer, dir };
}

/** Every parameter by HF name, each read from tfjs only when written (one parameter's copy at a time). */
export function deferredTensors(model: CausalLM): Map<string, DeferredTensor> {
  const out = new Map<string, DeferredTensor>();
  for (const [name, p] of model.params) out.set(name, { shape: [...p.shape], read: () => p.dataSync() as Float32Array });
  return out;
}

/** Reads every parameter to plain arrays, by HF name. */
export function modelTensors(model: CausalLM): Map<string, RawTensor> {
  const out = new Map<string, RawTensor>();
  for (const [name, p] of model.params) out.set(name, { shape: [...p.shape], data: p.dataSync() as Float32Array });
  return out;
}

/**
 * Writes config.json, the weights (model.safetensors, or shards past `options.maxShardBytes`, as float32 or
 * bfloat16) and, when given, tokenizer.json/tokenizer_config.json into `dir`: a directory `from_pretrained` loads.
 */
export function saveModel(dir: string, model: CausalLM, tokenizer?: PolicyTokenizer, options: CheckpointWriteOptions = {}): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), `${JSON.stringify(configToJson(model.config, options.dtype), null, 2)}\n`);
  writeCheckpointFiles(dir, deferredTensors(model), options);
  if (tokenizer) {
    writeFileSync(join(dir, "tokenizer.json"), `${JSON.stringify(tokenizer.tokenizerJson)}\n`);
    writeFileSync(join(dir, "tokenizer_config.json"), `${JSON.stringify(tokenizer.tokenizerConfig, null, 2)}\n`);
  }
}
