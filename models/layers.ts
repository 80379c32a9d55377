/**
 * Building blocks shared by the model families: norms, activations, the attention core with its masks and KV cache,
 * and seeded parameter creation. Everything here is a pure function of tensors; callers wrap it in `tf.tidy`.
 */
import * as tf from "@tensorflow/tfjs";
import type { ForwardOptions, KVCache } from "./model.js";
import { createRng } from "../lib/rng.js";
import { Code, RpcError } from "../lib/errors.js";

/** A large negative score for masked attention entries (finite, so fully masked rows stay finite too). */
const MASKED = -1e9;

/** LayerNorm over the last axis with learned scale and shift. */
export function layerNorm(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, eps: number): tf.Tensor {
  const mean = x.mean(-1, true);
  const centered = x.sub(mean);
  const variance = centered.square().mean(-1, true);
  return centered.mul(variance.add(eps).rsqrt()).mul(weight).add(bias);
}

/** RMSNorm over the last axis (Llama): x / sqrt(mean(x²) + eps) * weight. */
export function rmsNorm(x: tf.Tensor, weight: tf.Tensor, eps: number): tf.Tensor {
  return x.mul(x.square().mean(-1, true).add(eps).rsqrt()).mul(weight);
}

/**
 * GELU, tanh approximation (GPT-2's "gelu_new"): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), with a hand-written
 * gradient so that the backward pass keeps only x (autodiff of the composite keeps eight [B, T, 4C] intermediates,
 * the bulk of a train step's activation memory).
 */
export const geluTanh = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x]);
  return {
    value: geluTanhComposite(x),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [xs] = saved;
      const c = Math.sqrt(2 / Math.PI);
      const x2 = xs.mul(xs);
      const t = tf.tanh(xs.add(x2.mul(xs).mul(0.044715)).mul(c));
      // d/dx = 0.5·(1 + t) + 0.5·x·(1 − t²)·c·(1 + 3·0.044715·x²)
      const slope = t.add(1).mul(0.5).add(xs.mul(0.5).mul(tf.sub(1, t.mul(t))).mul(x2.mul(3 * 0.044715).add(1).mul(c)));
      return dy.mul(slope);
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as (x: tf.Tensor) => tf.Tensor;

/** The same GELU as plain ops (autodiff reference for tests). */
export function geluTanhComposite(x: tf.Tensor): tf.Tensor {
  const c = Math.sqrt(2 / Math.PI);
  // x³ as x·x·x: wasm's Pow kernel (and its gradient) is an order of magnitude slower than two multiplies.
  return x.mul(0.5).mul(tf.tanh(x.add(x.mul(x).mul(x).mul(0.044715)).mul(c)).add(1));
}

/** GELU with erf (PyTorch's default `gelu`). */
export function geluErf(x: tf.Tensor): tf.Tensor {
  return x.mul(0.5).mul(tf.erf(x.mul(Math.SQRT1_2)).add(1));
}

/** x @ W (+ b) for a weight stored [in, out] (GPT-2's Conv1D). x is [..., in]. */
export function conv1d(x: tf.Tensor, weight: tf.Tensor, bias?: tf.Tensor): tf.Tensor {
  const shape = x.shape as number[];
  const flat = x.reshape([-1, shape[shape.length - 1]]); // (N, in)
  let y = tf.matMul(flat as tf.Tensor2D, weight as tf.Tensor2D); // (N, out)
  if (bias) y = y.add(bias);
  return y.reshape([...shape.slice(0, -1), weight.shape[1] as number]); // (..., out)
}

/** x @ Wᵀ (+ b) for a weight stored [out, in] (torch.nn.Linear). x is [..., in]. */
export function linear(x: tf.Tensor, weight: tf.Tensor, bias?: tf.Tensor): tf.Tensor {
  const shape = x.shape as number[];
  const flat = x.reshape([-1, shape[shape.length - 1]]); // (N, in)
  let y = tf.matMul(flat as tf.Tensor2D, weight as tf.Tensor2D, false, true); // (N, out)
  if (bias) y = y.add(bias);
  return y.reshape([...shape.slice(0, -1), weight.shape[0]]); // (..., out)
}

/**
 * Positions of the new tokens: the caller's, or past + 0..T-1 for every row.
 * Returns int32 [B, T].
 */
export function positionsFor(B: number, T: number, options: ForwardOptions): tf.Tensor2D {
  if (options.positions) return options.positions;
  const past = options.cache ? options.cache.layers[0].k.shape[2] : 0;
  return tf.range(past, past + T, 1, "int32").expandDims(0).tile([B, 1]) as tf.Tensor2D; // (B, T)
}

/**
 * Additive attention bias [B, 1, T, S] for T new queries over S = past + T keys: 0 where a query may attend (the key
 * is not in its future and not padding), MASKED elsewhere.
 */
export function attentionBias(B: number, T: number, S: number, attentionMask?: tf.Tensor2D): tf.Tensor4D {
  const past = S - T;
  const causal = new Float32Array(T * S);
  for (let i = 0; i < T; i++) for (let j = past + i + 1; j < S; j++) causal[i * S + j] = MASKED;
  let bias = tf.tensor4d(causal, [1, 1, T, S]);
  if (attentionMask) {
    if (attentionMask.shape[0] !== B || attentionMask.shape[1] !== S) {
      throw new RpcError(Code.INTERNAL, `attentionMask must be [${B}, ${S}] (batch, past + new tokens), got [${attentionMask.shape}]`);
    }
    const pad = tf.sub(1, attentionMask.toFloat()).mul(MASKED).reshape([B, 1, 1, S]); // (B, 1, 1, S)
    bias = bias.add(pad);
  }
  return bias;
}

/**
 * Scaled dot-product attention with grouped-query heads and an optional KV cache.
 * q: [B, H, T, hs]; k, v: [B, KV, T, hs] for the new positions; returns y [B, T, H*hs] and the extended keys/values.
 */
export function attention(
  q: tf.Tensor4D,
  k: tf.Tensor4D,
  v: tf.Tensor4D,
  bias: tf.Tensor4D,
  past: { k: tf.Tensor4D; v: tf.Tensor4D } | undefined,
): { y: tf.Tensor3D; k: tf.Tensor4D; v: tf.Tensor4D } {
  const [B, H, T, hs] = q.shape; // batch, heads, new time, head size
  const kAll = past ? (tf.concat([past.k, k], 2) as tf.Tensor4D) : k; // (B, KV, S, hs)
  const vAll = past ? (tf.concat([past.v, v], 2) as tf.Tensor4D) : v; // (B, KV, S, hs)
  const [, KV, S] = kAll.shape;
  const rep = H / KV;
  if (T === 1) {
    // One new token (a decoding step): attention is two matrix-vector products per head, done as broadcast
    // multiply-and-sum, far cheaper than B·H tiny matMuls. Head h = g·rep + r reads kv head g (HF's repeat_kv).
    const qg = q.reshape([B, KV, rep, 1, hs]); // (B, KV, rep, 1, hs)
    const scores = qg
      .mul(kAll.expandDims(2)) // (B, KV, rep, S, hs)
      .sum(-1) // (B, KV, rep, S)
      .reshape([B, H, 1, S]) // (B, H, 1, S)
      .mul(1 / Math.sqrt(hs))
      .add(bias);
    const probs = tf.softmax(scores, -1).reshape([B, KV, rep, S, 1]); // (B, KV, rep, S, 1)
    const y = probs
      .mul(vAll.expandDims(2)) // (B, KV, rep, S, hs)
      .sum(3) // (B, KV, rep, hs)
      .reshape([B, 1, H * hs]) as tf.Tensor3D; // (B, 1, C)
    return { y, k: kAll, v: vAll };
  }
  // Grouped-query attention without copying keys/values: the rep query heads of a group are stacked along time and
  // share one product with that group's keys.
  const qg = q.reshape([B, KV, rep * T, hs]); // (B, KV, rep·T, hs)
  const scores = tf
    .matMul(qg, kAll, false, true) // (B, KV, rep·T, S)
    .reshape([B, H, T, S]) // (B, H, T, S)
    .mul(1 / Math.sqrt(hs))
    .add(bias);
  const probs = tf.softmax(scores, -1).reshape([B, KV, rep * T, S]); // (B, KV, rep·T, S)
  const y = tf
    .matMul(probs, vAll) // (B, KV, rep·T, hs)
    .reshape([B, H, T, hs]) // (B, H, T, hs)
    .transpose([0, 2, 1, 3]) // (B, T, H, hs)
    .reshape([B, T, H * hs]) as tf.Tensor3D; // (B, T, C)
  return { y, k: kAll, v: vAll };
}

/** Splits [B, T, n*hs] into heads: (B, n, T, hs). */
export function splitHeads(x: tf.Tensor, n: number, hs: number): tf.Tensor4D {
  const [B, T] = x.shape as number[];
  return x.reshape([B, T, n, hs]).transpose([0, 2, 1, 3]) as tf.Tensor4D; // (B, n, T, hs)
}

/** Seeded initialisation recipes for fresh models (reproducible across backends: values come from our own PRNG). */
export type Init = { kind: "normal"; std: number } | { kind: "zeros" } | { kind: "ones" };

/** Creates a named trainable variable, initialised by `init` from (seed, index). */
export function makeParam(name: string, shape: number[], init: Init, seed: number, index: number): tf.Variable {
  const size = shape.reduce((p, d) => p * d, 1);
  const data = new Float32Array(size);
  if (init.kind === "ones") data.fill(1);
  else if (init.kind === "normal") {
    const rng = createRng(seed, index);
    for (let i = 0; i < size; i++) data[i] = rng.normal() * init.std;
  }
  const initial = tf.tensor(data, shape, "float32");
  const variable = tf.variable(initial, true, `${name}#${nextVariableId++}`);
  initial.dispose(); // the variable holds its own reference to the data
  return variable;
}
let nextVariableId = 0;

/** Returns a new cache layer list for an extended cache. */
export function cacheOf(layers: { k: tf.Tensor4D; v: tf.Tensor4D }[]): KVCache {
  return { layers };
}
