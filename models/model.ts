/**
 * The interface every model family implements, so that samplers, scorers, trainers and the ONNX exporter work on
 * any of them. A model is a set of tf.Variables named exactly as in the Hugging Face checkpoint plus a pure forward
 * function of them; `tf.variableGrads` over `forward` gives gradients by HF name.
 */
import type * as tf from "@tensorflow/tfjs";
import type { ModelConfig } from "./config.js";

/** Keys and values of the positions seen so far, per layer: k, v are [B, n_kv_heads, S, head_dim]. */
export interface KVCache {
  layers: { k: tf.Tensor4D; v: tf.Tensor4D }[];
}

export interface ForwardOptions {
  /** [B, T] int32 position of each new token; default past + 0..T-1 for every row. Left-padded rows need it. */
  positions?: tf.Tensor2D;
  /** [B, S_past + T] 1 where a key may be attended, 0 for padding; default all ones. Causality is always applied. */
  attentionMask?: tf.Tensor2D;
  /** Keys/values of earlier positions (from a previous call's `cache`). */
  cache?: KVCache;
  /** Return the cache extended with these positions. @default false */
  useCache?: boolean;
  /** Compute logits for the last position only ([B, 1, V]): what sampling needs. @default false */
  lastOnly?: boolean;
}

export interface ForwardOutput {
  /** [B, T, V] (or [B, 1, V] with `lastOnly`) unnormalised next-token scores. */
  logits: tf.Tensor3D;
  /** Present when `useCache` was set; the caller disposes it (see `disposeCache`). */
  cache?: KVCache;
}

/** A decoder-only causal language model. */
export interface CausalLM {
  /** The architecture, in HF config.json names. */
  readonly config: ModelConfig;
  /** Every trainable parameter by its HF checkpoint name (tied weights appear once, under the embedding's name). */
  readonly params: ReadonlyMap<string, tf.Variable>;
  /** One forward pass over new tokens `ids` ([B, T] int32). Synchronous and tidy: only the outputs survive. */
  forward(ids: tf.Tensor2D, options?: ForwardOptions): ForwardOutput;
  /** Frees the parameters. */
  dispose(): void;
}

/** Frees a cache's tensors. */
export function disposeCache(cache: KVCache | undefined): void {
  if (!cache) return;
  for (const { k, v } of cache.layers) {
    k.dispose();
    v.dispose();
  }
}
