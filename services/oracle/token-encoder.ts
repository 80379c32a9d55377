/**
 * Text → token ids for the ONNX oracles, with Hugging Face truncation semantics: a text encoded "with max_length n
 * and truncation" keeps its first n − s tokens, where s is the number of special tokens the tokenizer's
 * post-processor adds ([CLS] … [SEP] for DeBERTa), so the result including those tokens is at most n long.
 * That is what PairRM's `tokenize_pair` does with `tokenizer.encode(prefix + text, max_length=…, truncation=True)`.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { kindError } from "../../lib/errors.js";

export interface Encoded {
  ids: number[];
  /** True when tokens were cut to fit. */
  truncated: boolean;
}

export interface EncodedPair {
  ids: number[];
  truncatedFirst: boolean;
  truncatedSecond: boolean;
}

export class TokenEncoder {
  private readonly singleSpecials: number;
  private readonly unkId: number;

  private constructor(
    readonly tokenizer: Tokenizer,
    unkToken: string | undefined,
  ) {
    this.singleSpecials = this.postProcess([], null).length;
    this.unkId = (unkToken !== undefined ? tokenizer.token_to_id(unkToken) : undefined) ?? 0;
  }

  /**
   * Loads `tokenizer.json` (and `tokenizer_config.json` when present) from a model directory.
   * @throws Error naming the file when it is missing or not a tokenizer.
   */
  static fromDirectory(dir: string): TokenEncoder {
    const path = join(dir, "tokenizer.json");
    let json: { model?: { unk_token?: string } };
    try {
      json = JSON.parse(readFileSync(path, "utf8"));
    } catch (err) {
      throw kindError("model-format", `${path}: cannot read the tokenizer (${(err as Error).message})`);
    }
    let config: Record<string, unknown> = {};
    try {
      config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw kindError("model-format", `${join(dir, "tokenizer_config.json")}: ${(err as Error).message}`, { cause: err });
    }
    // A WordLevel model is read by tokenizers.js as its "Legacy" model, which takes the unknown token from the config.
    const unkToken = (config.unk_token as string | undefined) ?? json.model?.unk_token;
    try {
      return new TokenEncoder(new Tokenizer(json, { unk_token: unkToken, ...config }), unkToken);
    } catch (err) {
      throw kindError("model-format", `${path}: not a tokenizer tokenizers.js can load (${(err as Error).message})`);
    }
  }

  /** The id of a token, or undefined when it is not in the vocabulary. */
  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  private postProcess(first: string[], second: string[] | null): string[] {
    const post = this.tokenizer.post_processor;
    if (post === null) return second === null ? first : [...first, ...second];
    type Post = (a: string[], b: string[] | null, addSpecial: boolean) => { tokens: string[]; tokens_pair?: string[] | null };
    const out = (post as unknown as Post)(first, second, true);
    // ByteLevel's post-processor hands the pair back unjoined.
    return out.tokens_pair ? [...out.tokens, ...out.tokens_pair] : out.tokens;
  }

  private toIds(tokens: readonly string[]): number[] {
    return tokens.map((t) => this.tokenizer.token_to_id(t) ?? this.unkId);
  }

  private tokens(text: string): string[] {
    return this.tokenizer.tokenize(text, { add_special_tokens: false });
  }

  /** One text with special tokens, at most `maxLength` ids in all. */
  encode(text: string, maxLength: number): Encoded {
    const tokens = this.tokens(text);
    const room = Math.max(0, maxLength - this.singleSpecials);
    const truncated = tokens.length > room;
    return { ids: this.toIds(this.postProcess(truncated ? tokens.slice(0, room) : tokens, null)), truncated };
  }

  /**
   * A text pair ([CLS] a [SEP] b [SEP] for BERT-like tokenizers), the first cut to `maxFirst` tokens and the second
   * to `maxSecond`, special tokens not counted (the form of a sequence-classification reward model's input).
   */
  encodePair(first: string, maxFirst: number, second: string, maxSecond: number): EncodedPair {
    const a = this.tokens(first);
    const b = this.tokens(second);
    return {
      ids: this.toIds(this.postProcess(a.slice(0, maxFirst), b.slice(0, maxSecond))),
      truncatedFirst: a.length > maxFirst,
      truncatedSecond: b.length > maxSecond,
    };
  }
}
