/**
 * The policy's tokenizer: `tokenizer.json` run by `@huggingface/tokenizers` (pure JS), plus `tokenizer_config.json`'s
 * special tokens and chat template, rendered by `@huggingface/jinja` (a sandboxed template interpreter: nothing in a
 * model directory is ever executed as code). Checked for @huggingface/jinja 0.5: it lexes, parses and walks the
 * template's AST itself, with no eval or Function, and attribute lookups go through its own Map-backed values and
 * builtins, never the JS prototype chain, so a template cannot reach `constructor`, `process` or `require`.
 */
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";

/** A chat message as chat templates expect it. */
/**
 * tokenizer.json of a word-level vocabulary: `specials` (ids 0.., added as special tokens) then `words`. Written as an
 * HF WordPiece model whose vocabulary holds whole words (tokenizers.js has no WordLevel model), lower-casing and
 * splitting on whitespace and punctuation, so that both @huggingface/tokenizers and Python's `tokenizers` read it.
 */
export function wordTokenizerJson(specials: readonly string[], words: readonly string[], unkToken = "<unk>"): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  [...specials, ...words].forEach((w, i) => {
    vocab[w] = i;
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: "Lowercase" },
    pre_tokenizer: { type: "Whitespace" },
    post_processor: null,
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: unkToken, continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
  };
}

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return undefined;
}

export class PolicyTokenizer {
  private readonly tokenizer: Tokenizer;
  private readonly template: Template | undefined;
  /** Id that ends a response, if the tokenizer has one. */
  readonly eosId: number | undefined;
  /** Id that starts a sequence, if any. */
  readonly bosId: number | undefined;
  /** Id used for padding, if any (else the engine pads with EOS or 0: padding is masked, its value never matters). */
  readonly padId: number | undefined;
  readonly eosToken: string | undefined;
  readonly bosToken: string | undefined;
  /** The raw JSON files, kept so that `saveModel` writes them back unchanged. */
  readonly tokenizerJson: Record<string, unknown>;
  readonly tokenizerConfig: Record<string, unknown>;

  constructor(tokenizerJson: Record<string, unknown>, tokenizerConfig: Record<string, unknown> = {}) {
    this.tokenizerJson = tokenizerJson;
    this.tokenizerConfig = tokenizerConfig;
    this.tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    this.eosToken = tokenText(tokenizerConfig.eos_token);
    this.bosToken = tokenText(tokenizerConfig.bos_token);
    const id = (t: string | undefined) => (t === undefined ? undefined : this.tokenizer.token_to_id(t));
    this.eosId = id(this.eosToken);
    this.bosId = id(this.bosToken);
    this.padId = id(tokenText(tokenizerConfig.pad_token));
    const template = tokenizerConfig.chat_template;
    if (typeof template === "string") this.template = new Template(template);
    else if (Array.isArray(template)) {
      // The list form: [{name, template}], "default" first.
      const entries = template as { name: string; template: string }[];
      const chosen = entries.find((e) => e.name === "default") ?? entries[0];
      if (chosen) this.template = new Template(chosen.template);
    }
  }

  /** Number of ids, added tokens included. */
  get vocabSize(): number {
    return this.tokenizer.get_vocab(true).size;
  }

  /** Token ids of `text`. Special tokens written in the text (e.g. from a chat template) are recognised. */
  encode(text: string, addSpecialTokens = false): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /** Text of `ids`, special tokens dropped by default. */
  decode(ids: number[], skipSpecialTokens = true): string {
    return this.tokenizer.decode(ids, { skip_special_tokens: skipSpecialTokens });
  }

  /** The token string of an id. */
  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /** Whether tokenizer_config.json carries a chat template. */
  get hasChatTemplate(): boolean {
    return this.template !== undefined;
  }

  /**
   * The text the model continues for a user prompt: the chat template rendered with one user message and the
   * generation prompt, or the prompt unchanged when there is no template.
   */
  formatPrompt(prompt: string | ChatMessage[]): string {
    const messages = typeof prompt === "string" ? [{ role: "user", content: prompt }] : prompt;
    if (!this.template) return messages.map((m) => m.content).join("\n");
    return this.template.render({
      messages,
      add_generation_prompt: true,
      bos_token: this.bosToken ?? "",
      eos_token: this.eosToken ?? "",
    });
  }
}
