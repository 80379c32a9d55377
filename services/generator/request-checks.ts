/**
 * Checking and tokenising Generate and Score requests. Requests are the protobuf messages themselves (their field
 * names are the ones errors name); a check throws an RpcError naming the field at fault. Checks that need no policy
 * version run before one is acquired; the rest run on the version the request was given. A Generate request's
 * SamplingParams take generator.sampling (the same fields) where unset, and go on to the engine as its run options.
 */
import type { GenerateRequest, ScoreRequest } from "../../gen/sppo/v1/generator_pb.js";
import type { GeneratorConfig } from "../../lib/config/generator.js";
import type { SamplingDefaults } from "../../lib/config/sampling.js";
import { Code, fieldError } from "../../lib/errors.js";
import { invalidUtf8 } from "../../lib/grpc/definition.js";
import { encodePrompt, type PolicyTokenizer } from "../../models/index.js";
import type { EngineSampleOptions, PolicyEngine, ScorePair } from "./engine.js";
import { invalid } from "./errors.js";

/** What the checks need of a policy version. */
export interface CheckedVersion {
  info: { version: number };
  engine: Pick<PolicyEngine, "vocabSize" | "contextLength">;
  tokenizer: PolicyTokenizer | undefined;
  eosId: number | undefined;
  padId: number;
}

/** The sampling of one Generate request, before its prompt is known. */
export interface RequestSampling {
  k: number;
  options: Omit<EngineSampleOptions, "seed" | "eosId" | "padId">;
  stopOnEos: boolean;
  /** The request's seed; undefined: the run's random seed. */
  seed: number | undefined;
}

/** A Generate request checked on its version: its prompt ids and the options of its engine run. */
export interface CheckedGenerate {
  prompt: number[];
  options: Omit<EngineSampleOptions, "seed" | "rows">;
}

/** A seed from the request: the low 53 bits of the uint64, so that every seed maps to one exact double. */
function seedOf(seed: bigint): number {
  return Number(BigInt.asUintN(53, seed));
}

/** Checks ids against the vocabulary, naming the first bad one. */
function checkIds(ids: readonly number[], vocabSize: number, field: string): void {
  for (let i = 0; i < ids.length; i++) {
    if (!(ids[i] >= 0 && ids[i] < vocabSize)) throw invalid(`${field}[${i}]`, `token id ${ids[i]} is outside the vocabulary [0, ${vocabSize})`);
  }
}

/** Prompt ids of a request: the ids given, or the text encoded (chat template unless raw). */
function promptIds(handle: CheckedVersion, ids: readonly number[], text: string, raw: boolean): { ids: number[]; field: string } {
  if (ids.length > 0) {
    checkIds(ids, handle.engine.vocabSize, "prompt_token_ids");
    return { ids: [...ids], field: "prompt_token_ids" };
  }
  if (text.trim() === "") throw invalid("prompt", "empty (set prompt or prompt_token_ids)");
  // Bytes that were not UTF-8 arrive escaped (lib/grpc/definition.ts): refused here, naming the field.
  const notUtf8 = invalidUtf8(text);
  if (notUtf8) throw invalid("prompt", notUtf8);
  const tokenizer = handle.tokenizer;
  if (!tokenizer) throw fieldError(Code.FAILED_PRECONDITION, "prompt", `policy version ${handle.info.version} has no tokenizer.json; send prompt_token_ids`);
  let encoded: number[];
  if (raw) {
    encoded = tokenizer.encode(text);
    if (tokenizer.bosId !== undefined && encoded[0] !== tokenizer.bosId) encoded.unshift(tokenizer.bosId);
  } else encoded = encodePrompt(tokenizer, text);
  if (encoded.length === 0) throw invalid("prompt", "encodes to no tokens");
  return { ids: encoded, field: "prompt" };
}

/** num_samples and the sampling params of a Generate request over the configured defaults, checked. */
export function checkGenerateRequest(request: GenerateRequest, config: GeneratorConfig): RequestSampling {
  const k = request.numSamples;
  if (k === 0) throw invalid("num_samples", "must be ≥ 1");
  if (k > config.maxSamples) throw invalid("num_samples", `${k} exceeds the maximum of ${config.maxSamples}`);
  const d: SamplingDefaults = config.sampling;
  const p = request.params;
  const temperature = p?.temperature ?? d.temperature;
  if (!(Number.isFinite(temperature) && temperature >= 0)) throw invalid("params.temperature", `must be a finite number ≥ 0, got ${temperature}`);
  const topP = p?.topP ?? d.topP;
  if (!(topP > 0 && topP <= 1)) throw invalid("params.top_p", `must be in (0, 1], got ${topP}`);
  const topK = p?.topK ?? d.topK;
  const maxNewTokens = p?.maxNewTokens ?? d.maxNewTokens;
  if (maxNewTokens < 1 || maxNewTokens > config.maxNewTokensLimit) {
    throw invalid("params.max_new_tokens", `must be in [1, ${config.maxNewTokensLimit}], got ${maxNewTokens}`);
  }
  return { k, options: { temperature, topP, topK, maxNewTokens }, stopOnEos: p?.stopOnEos ?? d.stopOnEos, seed: p?.seed === undefined ? undefined : seedOf(p.seed) };
}

/** The prompt of a Generate request on `handle`, and its run's options (max_new_tokens cut to the context's room). */
export function checkGenerateOnVersion(request: GenerateRequest, sampling: RequestSampling, handle: CheckedVersion): CheckedGenerate {
  const prompt = promptIds(handle, request.promptTokenIds, request.prompt, request.raw);
  const context = handle.engine.contextLength;
  if (prompt.ids.length >= context) {
    throw invalid(prompt.field, `${prompt.ids.length} tokens, but the policy's context is ${context} tokens and at least one must be left for the response (at most ${context - 1} prompt tokens)`);
  }
  const options = {
    ...sampling.options,
    // The context bounds the response: a sample that reaches it ends with FINISH_REASON_LENGTH.
    maxNewTokens: Math.min(sampling.options.maxNewTokens, context - prompt.ids.length),
    eosId: sampling.stopOnEos ? handle.eosId : undefined,
    padId: handle.padId,
  };
  return { prompt: prompt.ids, options };
}

/** How many responses a Score request carries, and whether as ids; checked against maxBatch. */
export function checkScoreRequest(request: ScoreRequest, config: Pick<GeneratorConfig, "maxBatch">): { count: number; useIds: boolean } {
  const useIds = request.responses.length > 0;
  const count = useIds ? request.responses.length : request.responseTexts.length;
  if (count === 0) throw invalid("responses", "no responses (set responses or response_texts)");
  if (count > config.maxBatch) throw invalid(useIds ? "responses" : "response_texts", `${count} responses exceed the maximum of ${config.maxBatch} per request`);
  return { count, useIds };
}

/** The (prompt, response) pairs of a Score request on `handle`; text responses are encoded and end with EOS. */
export function scorePairsOf(request: ScoreRequest, shape: { count: number; useIds: boolean }, handle: CheckedVersion): ScorePair[] {
  const prompt = promptIds(handle, request.promptTokenIds, request.prompt, false);
  const context = handle.engine.contextLength;
  if (prompt.ids.length > context) throw invalid(prompt.field, `${prompt.ids.length} tokens exceed the policy's context of ${context} tokens`);
  const pairs: ScorePair[] = [];
  for (let i = 0; i < shape.count; i++) {
    let response: number[];
    let field: string;
    if (shape.useIds) {
      field = `responses[${i}].token_ids`;
      response = [...request.responses[i].tokenIds];
      checkIds(response, handle.engine.vocabSize, field);
    } else {
      field = `response_texts[${i}]`;
      const tokenizer = handle.tokenizer;
      if (!tokenizer) throw fieldError(Code.FAILED_PRECONDITION, field, `policy version ${handle.info.version} has no tokenizer.json; send responses as token ids`);
      const notUtf8 = invalidUtf8(request.responseTexts[i]);
      if (notUtf8) throw invalid(field, notUtf8);
      // As a sampled response that ended on EOS: its text, then EOS (which is scored).
      response = tokenizer.encode(request.responseTexts[i]);
      if (handle.eosId !== undefined) response.push(handle.eosId);
    }
    if (prompt.ids.length + response.length > context) {
      throw invalid(field, `prompt (${prompt.ids.length}) + response (${response.length}) = ${prompt.ids.length + response.length} tokens exceed the policy's context of ${context}`);
    }
    pairs.push({ prompt: prompt.ids, response });
  }
  return pairs;
}
