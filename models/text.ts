/**
 * Text-level sampling and scoring over a loaded model directory: prompts go through the chat template (when the
 * tokenizer has one) and are prefixed with BOS when the template does not already start with it.
 */
import type { LoadedModel } from "./io.js";
import type { CausalLM } from "./model.js";
import { type SampleOptions, type SampleResult, sampleIds } from "./sample.js";
import { type Score, scorePairs } from "./score.js";
import type { PolicyTokenizer } from "./tokenizer.js";
import { kindError } from "../lib/errors.js";

/** Prompt text → the ids the model continues. */
export function encodePrompt(tokenizer: PolicyTokenizer, prompt: string): number[] {
  const ids = tokenizer.encode(tokenizer.formatPrompt(prompt));
  if (tokenizer.bosId !== undefined && ids[0] !== tokenizer.bosId) ids.unshift(tokenizer.bosId);
  if (ids.length === 0) throw new RangeError("prompt encodes to no tokens and the tokenizer has no BOS token");
  return ids;
}

/** A sample with its decoded text (special tokens such as EOS dropped). */
export interface TextSample extends SampleResult {
  text: string;
}

function requireTokenizer(loaded: LoadedModel): PolicyTokenizer {
  if (!loaded.tokenizer) throw kindError("model-format", `${loaded.dir}: no tokenizer.json, so text prompts cannot be encoded`);
  return loaded.tokenizer;
}

function eosOf(model: CausalLM, tokenizer: PolicyTokenizer): number | undefined {
  return tokenizer.eosId ?? model.config.eos_token_id ?? undefined;
}

/**
 * Samples `k` responses for each prompt in one batch. Row p·k + j uses generator stream p·k + j, so each draw is
 * reproducible given the seed and its place in the request.
 */
export function sampleText(loaded: LoadedModel, prompts: string[], options: SampleOptions & { k?: number } = {}): TextSample[][] {
  const tokenizer = requireTokenizer(loaded);
  const k = options.k ?? 1;
  if (!Number.isInteger(k) || k < 1) throw new TypeError(`k must be an integer ≥ 1, got ${k}`);
  const rows = prompts.flatMap((p) => Array.from({ length: k }, () => encodePrompt(tokenizer, p)));
  const results = sampleIds(loaded.model, rows, {
    eosId: eosOf(loaded.model, tokenizer),
    padId: tokenizer.padId ?? tokenizer.eosId ?? 0,
    ...options,
  });
  return prompts.map((_, p) => results.slice(p * k, (p + 1) * k).map((r) => ({ ...r, text: tokenizer.decode(r.tokenIds) })));
}

/**
 * Scores text responses. The response is tokenized as it follows the prompt and, with `appendEos` (default true),
 * EOS is appended: a sampled response that ended on EOS scores the same as its sampled log-prob.
 */
export function scoreText(loaded: LoadedModel, pairs: { prompt: string; response: string }[], options: { appendEos?: boolean; batchSize?: number } = {}): Score[] {
  const tokenizer = requireTokenizer(loaded);
  const eos = eosOf(loaded.model, tokenizer);
  const tokenPairs = pairs.map(({ prompt, response }) => {
    const response_ = tokenizer.encode(response);
    if ((options.appendEos ?? true) && eos !== undefined) response_.push(eos);
    return { prompt: encodePrompt(tokenizer, prompt), response: response_ };
  });
  return scorePairs(loaded.model, tokenPairs, { batchSize: options.batchSize, padId: tokenizer.padId ?? eos ?? 0 });
}
