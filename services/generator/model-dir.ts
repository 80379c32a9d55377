/**
 * Reading a policy model directory (config.json, model.safetensors, tokenizer.json, tokenizer_config.json) into what
 * the generator serves: the engine, the tokenizer (optional: without one only token ids are accepted), and the EOS and
 * padding ids. The same reading serves the base directory (version 0) and every pulled version.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { architectureMismatch, normalizeConfig, PolicyTokenizer } from "../../models/index.js";
import type { EngineLoader, EngineLoadOptions, PolicyEngine } from "./engine.js";
import { kindError } from "../../lib/errors.js";

/** A model directory opened for serving. */
export interface OpenedModel {
  engine: PolicyEngine;
  tokenizer: PolicyTokenizer | undefined;
  /** The EOS id: the tokenizer's, else config.json's eos_token_id; undefined when the model has none. */
  eosId: number | undefined;
  /** Id written into padding positions (masked: its value never matters): the tokenizer's pad, else EOS, else 0. */
  padId: number;
}

function readJsonIfPresent(path: string): Record<string, unknown> | undefined {
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw kindError("model-format", `${path}: not valid JSON (${(err as Error).message})`);
  }
}

/** The tokenizer of a model directory, or undefined when it has none (then only token ids are accepted). */
export function loadTokenizer(dir: string): PolicyTokenizer | undefined {
  const json = readJsonIfPresent(join(dir, "tokenizer.json"));
  if (!json) return undefined;
  try {
    return new PolicyTokenizer(json, readJsonIfPresent(join(dir, "tokenizer_config.json")) ?? {});
  } catch (err) {
    throw kindError("model-format", `${join(dir, "tokenizer.json")}: cannot build the tokenizer (${(err as Error).message})`);
  }
}

/** The model's EOS id: the tokenizer's, else config.json's eos_token_id. */
export function eosOf(dir: string, tokenizer: PolicyTokenizer | undefined): number | undefined {
  if (tokenizer?.eosId !== undefined) return tokenizer.eosId;
  const eos = readJsonIfPresent(join(dir, "config.json"))?.eos_token_id;
  if (typeof eos === "number") return eos;
  if (Array.isArray(eos) && typeof eos[0] === "number") return eos[0];
  return undefined;
}

/** Fails with a "model-format" RpcError saying what a model directory holds when `dir` has no config.json. */
export function checkModelDir(dir: string, field: string): void {
  if (!existsSync(join(dir, "config.json"))) {
    throw kindError("model-format", 
      `${field}: ${dir} holds no config.json (a model directory has config.json, model.safetensors and tokenizer.json; make the default policy with scripts/make-default-policy.ts)`,
    );
  }
}

/**
 * Opens the model directory `dir` on the engine `load` gives (tokenizer first: a bad tokenizer fails before the
 * weights are loaded). A bad directory throws a "model-format" RpcError.
 */
export async function openModelDir(dir: string, load: EngineLoader, options: EngineLoadOptions): Promise<OpenedModel> {
  const tokenizer = loadTokenizer(dir);
  const engine = await load(dir, options);
  const eosId = eosOf(dir, tokenizer);
  return { engine, tokenizer, eosId, padId: tokenizer?.padId ?? eosId ?? 0 };
}

/**
 * Why the model directory `dir` cannot be a policy version of the base model in `baseDir` (another family, or other
 * sizes: models/config.ts `architectureMismatch`), or undefined when it can. Reads only the two config.json files.
 */
export function notSameArchitecture(baseDir: string, dir: string): string | undefined {
  const config = (d: string) => {
    const raw = readJsonIfPresent(join(d, "config.json"));
    if (!raw) throw kindError("model-format", `${d}: no config.json`);
    return normalizeConfig(raw, join(d, "config.json"));
  };
  return architectureMismatch(config(baseDir), config(dir));
}
