/**
 * Text-level sampling and scoring on an OrtPolicy, the onnxruntime twins of models/text.ts's `sampleText` and
 * `scoreText`: the same chat template, BOS, EOS and padding rules, so both engines see the same ids.
 */
import { encodePrompt, type TextSample } from "../text.js";
import type { SampleOptions } from "../sample.js";
import type { Score } from "../score.js";
import type { PolicyTokenizer } from "../tokenizer.js";
import type { OrtPolicy } from "./policy.js";

function tokenizerOf(policy: OrtPolicy): PolicyTokenizer {
  if (!policy.tokenizer) throw new TypeError("the policy has no tokenizer.json, so text prompts cannot be encoded");
  return policy.tokenizer;
}

function eosOf(policy: OrtPolicy, tokenizer: PolicyTokenizer): number | undefined {
  return tokenizer.eosId ?? policy.config.eos_token_id ?? undefined;
}

/** Samples `k` responses for each prompt in one batch (row p·k + j uses generator stream p·k + j, as sampleText). */
export async function sampleTextOnnx(policy: OrtPolicy, prompts: string[], options: SampleOptions & { k?: number } = {}): Promise<TextSample[][]> {
  const tokenizer = tokenizerOf(policy);
  const k = options.k ?? 1;
  if (!Number.isInteger(k) || k < 1) throw new TypeError(`k must be an integer ≥ 1, got ${k}`);
  const rows = prompts.flatMap((p) => Array.from({ length: k }, () => encodePrompt(tokenizer, p)));
  const results = await policy.sample(rows, { eosId: eosOf(policy, tokenizer), padId: tokenizer.padId ?? tokenizer.eosId ?? 0, ...options });
  return prompts.map((_, p) => results.slice(p * k, (p + 1) * k).map((r) => ({ ...r, text: tokenizer.decode(r.tokenIds) })));
}

/** Scores text responses; with `appendEos` (default true) EOS is appended, as scoreText. */
export async function scoreTextOnnx(
  policy: OrtPolicy,
  pairs: { prompt: string; response: string }[],
  options: { appendEos?: boolean; batchSize?: number } = {},
): Promise<Score[]> {
  const tokenizer = tokenizerOf(policy);
  const eos = eosOf(policy, tokenizer);
  const tokenPairs = pairs.map(({ prompt, response }) => {
    const ids = tokenizer.encode(response);
    if ((options.appendEos ?? true) && eos !== undefined) ids.push(eos);
    return { prompt: encodePrompt(tokenizer, prompt), response: ids };
  });
  return policy.score(tokenPairs, { batchSize: options.batchSize, padId: tokenizer.padId ?? eos ?? 0 });
}
