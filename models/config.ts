/**
 * Model configurations, in Hugging Face `config.json` names so that a config written here loads in `transformers`
 * and the other way round. `normalizeConfig` is the one boundary where foreign names (`n_ctx`, Mistral/Qwen2
 * model types, list-valued `eos_token_id`, ...) are translated; everything after it sees these two shapes only.
 */
import { kindError } from "../lib/errors.js";

/** GPT-2: learned positions, pre-LayerNorm blocks, fused Conv1D attention, GELU MLP, tied LM head. */
export interface GPT2Config {
  model_type: "gpt2";
  /** Tokens in the vocabulary (rows of `transformer.wte`). */
  vocab_size: number;
  /** Longest sequence: rows of the learned position table `transformer.wpe`. */
  n_positions: number;
  /** Width of the residual stream (d_model). */
  n_embd: number;
  /** Transformer blocks. */
  n_layer: number;
  /** Attention heads; must divide `n_embd`. */
  n_head: number;
  /** Width of the MLP's hidden layer; null means 4 × n_embd. */
  n_inner: number | null;
  /** LayerNorm epsilon. */
  layer_norm_epsilon: number;
  /** MLP activation: "gelu_new" (tanh approximation, GPT-2's), "gelu" (erf), "relu". */
  activation_function: "gelu_new" | "gelu" | "relu";
  /** GPT-2 always ties the LM head to `transformer.wte`. */
  tie_word_embeddings: true;
  /** Id that starts a sequence, or null. */
  bos_token_id: number | null;
  /** Id that ends a response (sampling stops on it), or null. */
  eos_token_id: number | null;
  /** Id used to pad batches (never attended to), or null. */
  pad_token_id: number | null;
}

/** Llama (and Mistral/Qwen2-style): RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention. */
export interface LlamaConfig {
  model_type: "llama";
  /** Tokens in the vocabulary. */
  vocab_size: number;
  /** Width of the residual stream. */
  hidden_size: number;
  /** Width of the SwiGLU hidden layer (gate_proj/up_proj outputs). */
  intermediate_size: number;
  /** Decoder layers. */
  num_hidden_layers: number;
  /** Query heads. */
  num_attention_heads: number;
  /** Key/value heads (grouped-query attention); must divide num_attention_heads. Equal means plain multi-head. */
  num_key_value_heads: number;
  /** Width of one head; defaults to hidden_size / num_attention_heads. */
  head_dim: number;
  /** Longest sequence the rotary table is built for. */
  max_position_embeddings: number;
  /** RMSNorm epsilon. */
  rms_norm_eps: number;
  /** Rotary base θ: frequencies are θ^(-2i/head_dim). */
  rope_theta: number;
  /** Whether lm_head shares model.embed_tokens (then no lm_head.weight is stored). */
  tie_word_embeddings: boolean;
  /** Whether q/k/v/o projections carry biases (Qwen2 has q/k/v biases). */
  attention_bias: boolean;
  /** Whether the MLP projections carry biases. */
  mlp_bias: boolean;
  /** Id that starts a sequence, or null. */
  bos_token_id: number | null;
  /** Id that ends a response, or null. */
  eos_token_id: number | null;
  /** Id used to pad batches, or null. */
  pad_token_id: number | null;
}

export type ModelConfig = GPT2Config | LlamaConfig;

type Raw = Record<string, unknown>;

function num(raw: Raw, names: string[], fallback: number | undefined, where: string): number {
  for (const n of names) {
    const v = raw[n];
    if (typeof v === "number") return v;
  }
  if (fallback === undefined) throw kindError("model-format", `${where}: field ${names[0]} is required`);
  return fallback;
}

function tokenId(v: unknown): number | null {
  if (typeof v === "number") return v;
  if (Array.isArray(v) && typeof v[0] === "number") return v[0]; // several EOS ids: the first is the canonical one
  return null;
}

/** Builds a GPT-2 config from partial fields, filling GPT-2's defaults (those of `transformers.GPT2Config`). */
export function gpt2Config(partial: Partial<GPT2Config> = {}): GPT2Config {
  return normalizeConfig({ model_type: "gpt2", ...partial }) as GPT2Config;
}

/** Builds a Llama config from partial fields, filling `transformers.LlamaConfig`'s defaults. */
export function llamaConfig(partial: Partial<LlamaConfig> = {}): LlamaConfig {
  return normalizeConfig({ model_type: "llama", ...partial }) as LlamaConfig;
}

/**
 * Translates a parsed `config.json` into a ModelConfig and checks its invariants. `where` names the file in errors.
 * Unknown fields are ignored; a missing architecture-defining field with no HF default is an error.
 */
export function normalizeConfig(raw: Raw, where = "config.json"): ModelConfig {
  const type = String(raw.model_type ?? "");
  let config: ModelConfig;
  if (type === "gpt2") {
    const n_embd = num(raw, ["n_embd", "hidden_size"], 768, where);
    const act = String(raw.activation_function ?? "gelu_new");
    if (act !== "gelu_new" && act !== "gelu" && act !== "relu" && act !== "gelu_pytorch_tanh") {
      throw kindError("model-format", `${where}: activation_function ${act} is not supported`);
    }
    config = {
      model_type: "gpt2",
      vocab_size: num(raw, ["vocab_size"], 50257, where),
      n_positions: num(raw, ["n_positions", "n_ctx", "max_position_embeddings"], 1024, where),
      n_embd,
      n_layer: num(raw, ["n_layer", "num_hidden_layers"], 12, where),
      n_head: num(raw, ["n_head", "num_attention_heads"], 12, where),
      n_inner: typeof raw.n_inner === "number" ? raw.n_inner : null,
      layer_norm_epsilon: num(raw, ["layer_norm_epsilon"], 1e-5, where),
      activation_function: act === "gelu_pytorch_tanh" ? "gelu_new" : act,
      tie_word_embeddings: true,
      bos_token_id: tokenId(raw.bos_token_id ?? 50256),
      eos_token_id: tokenId(raw.eos_token_id ?? 50256),
      pad_token_id: tokenId(raw.pad_token_id),
    };
    if (config.n_embd % config.n_head !== 0) throw kindError("model-format", `${where}: n_embd ${config.n_embd} is not divisible by n_head ${config.n_head}`);
  } else if (type === "llama" || type === "mistral" || type === "qwen2") {
    const hidden = num(raw, ["hidden_size"], 4096, where);
    const heads = num(raw, ["num_attention_heads"], 32, where);
    config = {
      model_type: "llama",
      vocab_size: num(raw, ["vocab_size"], 32000, where),
      hidden_size: hidden,
      intermediate_size: num(raw, ["intermediate_size"], 11008, where),
      num_hidden_layers: num(raw, ["num_hidden_layers"], 32, where),
      num_attention_heads: heads,
      num_key_value_heads: num(raw, ["num_key_value_heads"], heads, where),
      head_dim: num(raw, ["head_dim"], Math.floor(hidden / heads), where),
      max_position_embeddings: num(raw, ["max_position_embeddings"], 2048, where),
      rms_norm_eps: num(raw, ["rms_norm_eps"], 1e-6, where),
      rope_theta: num(raw, ["rope_theta"], 10000, where),
      tie_word_embeddings: raw.tie_word_embeddings === true,
      attention_bias: raw.attention_bias === true || type === "qwen2",
      mlp_bias: raw.mlp_bias === true,
      bos_token_id: tokenId(raw.bos_token_id ?? 1),
      eos_token_id: tokenId(raw.eos_token_id ?? 2),
      pad_token_id: tokenId(raw.pad_token_id),
    };
    if (raw.rope_scaling != null) throw kindError("model-format", `${where}: rope_scaling is not supported`);
    if (config.num_attention_heads % config.num_key_value_heads !== 0) {
      throw kindError("model-format", `${where}: num_attention_heads ${heads} is not divisible by num_key_value_heads ${config.num_key_value_heads}`);
    }
    if (config.head_dim % 2 !== 0) throw kindError("model-format", `${where}: head_dim ${config.head_dim} must be even for rotary positions`);
  } else {
    throw kindError("model-format", `${where}: model_type "${type}" is not supported (gpt2, llama, mistral, qwen2 are)`);
  }
  return config;
}

/**
 * The JSON written to config.json: HF names plus `architectures` so that `transformers` picks the LM-head class, and
 * `torch_dtype` naming how the weights beside it are stored.
 */
export function configToJson(config: ModelConfig, storage: "float32" | "bfloat16" = "float32"): Raw {
  const arch = config.model_type === "gpt2" ? "GPT2LMHeadModel" : "LlamaForCausalLM";
  return { architectures: [arch], ...config, torch_dtype: storage };
}

/** Width of the residual stream, whatever the family. */
export function modelWidth(config: ModelConfig): number {
  return config.model_type === "gpt2" ? config.n_embd : config.hidden_size;
}

/** Longest sequence the model accepts. */
export function contextLength(config: ModelConfig): number {
  return config.model_type === "gpt2" ? config.n_positions : config.max_position_embeddings;
}

/**
 * What fixes a model's architecture: its family and every size that decides its parameters' shapes and how they are
 * used. Two models with equal architectures can take each other's weights (a policy version of the same base).
 */
export function modelArchitecture(config: ModelConfig): Record<string, string | number | boolean> {
  if (config.model_type === "gpt2") {
    const { vocab_size, n_positions, n_embd, n_layer, n_head, activation_function } = config;
    return { family: "gpt2", vocab_size, n_positions, n_embd, n_layer, n_head, n_inner: config.n_inner ?? 4 * n_embd, activation_function };
  }
  const { vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, tie_word_embeddings, attention_bias, mlp_bias } = config;
  return { family: "llama", vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, tie_word_embeddings, attention_bias, mlp_bias };
}

/** How `other`'s architecture differs from `base`'s ("family gpt2 ≠ llama", "n_embd 768 ≠ 96"), or undefined. */
export function architectureMismatch(base: ModelConfig, other: ModelConfig): string | undefined {
  const a = modelArchitecture(base);
  const b = modelArchitecture(other);
  if (a.family !== b.family) return `family ${b.family}, not ${a.family}`;
  const differ = Object.keys(a).filter((k) => a[k] !== b[k]);
  return differ.length === 0 ? undefined : differ.map((k) => `${k} ${b[k]}, not ${a[k]}`).join("; ");
}
