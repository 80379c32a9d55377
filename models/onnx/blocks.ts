/**
 * The pieces of a policy graph that every family shares, written on lib/onnx's GraphBuilder: the graph's inputs
 * (HF Optimum names, so that an exported file reads like one made by `optimum-cli export onnx`), the additive
 * attention bias, attention with the KV cache, norms, activations and the LM head. Each helper mirrors the tfjs
 * function of models/layers.ts it stands for, operation by operation, so both engines round the same way.
 */
import { DataType, type Dim, float, type GraphBuilder } from "../../lib/onnx/index.js";

/** The additive score of a masked attention entry; models/layers.ts uses the same finite value. */
export const MASKED = -1e9;

/** What a policy graph computes. */
export type PolicyGraphKind =
  /**
   * The exported form: logits for every new position, [batch, sequence, vocab], and the extended KV cache. Serves
   * prefill (past_sequence = 0) and one-token decode steps alike.
   */
  | "causal-lm"
  /** Sampling: like "causal-lm" but logits of the last new position only, [batch, vocab]. */
  | "step"
  /**
   * Scoring: no cache; inputs `targets` and `response_mask` (models/batch.ts's makeBatch layout, right-padded,
   * positions 0..T-1) and the output `logprob` [batch], the summed log-probability of the response tokens.
   */
  | "score";

/** Graph-level values every layer reads. */
export interface GraphInputs {
  /** [B, T] int64 new token ids. */
  ids: string;
  /** [2] int64: B, T (to reshape the 2-D residual stream into heads and back). */
  batchTime: string;
  /** [B, T] int64 positions (the "score" graph derives them: 0..T-1). */
  positions: string;
  /** [B, 1, T, S] float additive attention bias: causal and padding. */
  bias: string;
  /** Per layer, the cached keys/values [B, KV, P, hd] (absent for "score"). */
  past: { k: string; v: string }[] | undefined;
}

/** Symbolic dimension names of the graph's inputs and outputs. */
export const DIMS = { batch: "batch", sequence: "sequence", past: "past_sequence", total: "total_sequence" } as const;

/** Shape element `index` of `value` as an int64 scalar. */
function dimOf(g: GraphBuilder, value: string, index: number): string {
  return g.node("Shape", [value], { start: index, end: index + 1 }); // [1]
}

function scalar(g: GraphBuilder, oneElement: string): string {
  return g.squeeze(oneElement, [0]); // ()
}

/**
 * Declares the inputs of a graph of `kind` and computes the attention bias. For the cached kinds the mask covers
 * past and new positions ([B, P + T]); keys beyond a query's own position get MASKED, and so do padded keys.
 */
export function declareInputs(g: GraphBuilder, kind: PolicyGraphKind, layers: number, kvHeads: number, headDim: number): GraphInputs {
  const { batch, sequence, past: pastDim, total } = DIMS;
  const ids = g.input("input_ids", DataType.INT64, [batch, sequence]);
  const mask = g.input("attention_mask", DataType.INT64, [batch, kind === "score" ? sequence : total]);
  let positions: string;
  let past: GraphInputs["past"];
  if (kind === "score") {
    // Right-padded rows start at position 0 (models/batch.ts), so every row's positions are 0..T-1.
    const T = scalar(g, dimOf(g, ids, 1));
    const range = g.node("Range", [g.constInt64(0), T, g.constInt64(1)]); // (T)
    positions = g.unsqueeze(range, [0]); // (1, T), broadcast over the batch
  } else {
    positions = g.input("position_ids", DataType.INT64, [batch, sequence]);
    past = [];
    const cacheDims: Dim[] = [batch, kvHeads, pastDim, headDim];
    for (let i = 0; i < layers; i++) {
      past.push({
        k: g.input(`past_key_values.${i}.key`, DataType.FLOAT, cacheDims),
        v: g.input(`past_key_values.${i}.value`, DataType.FLOAT, cacheDims),
      });
    }
  }
  // Causal part: query i sits at absolute position P + i and may read keys 0..P+i (P = S - T).
  const T = scalar(g, dimOf(g, ids, 1));
  const S = scalar(g, dimOf(g, mask, 1));
  const queryPos = g.node("Range", [g.sub(S, T), S, g.constInt64(1)]); // (T)
  const keyPos = g.node("Range", [g.constInt64(0), S, g.constInt64(1)]); // (S)
  const future = g.node("Greater", [g.unsqueeze(keyPos, [0]), g.unsqueeze(queryPos, [1])]); // (T, S) key after query
  const causal = g.mul(g.cast(future, DataType.FLOAT), g.constFloat(MASKED)); // (T, S)
  // Padding part: (1 - mask) · MASKED on every query's row, as models/layers.ts's attentionBias.
  const padding = g.mul(g.sub(g.constFloat(1), g.cast(mask, DataType.FLOAT)), g.constFloat(MASKED)); // (B, S)
  const bias = g.add(g.unsqueeze(causal, [0, 1]), g.unsqueeze(padding, [1, 2])); // (B, 1, T, S)
  const batchTime = g.node("Shape", [ids]); // [B, T]
  return { ids, batchTime, positions, bias, past };
}

/** LayerNorm over the last axis (GPT-2). */
export function layerNorm(g: GraphBuilder, x: string, weight: string, bias: string, eps: number): string {
  return g.node("LayerNormalization", [x, weight, bias], { axis: -1, epsilon: float(eps) });
}

/** RMSNorm over the last axis (Llama): x · 1/√(mean(x²) + eps) · weight, as models/layers.ts's rmsNorm. */
export function rmsNorm(g: GraphBuilder, x: string, weight: string, eps: number): string {
  const meanSquare = g.reduceMean(g.mul(x, x), [-1], true); // (..., 1)
  const inv = g.node("Reciprocal", [g.node("Sqrt", [g.add(meanSquare, g.constFloat(eps))])]);
  return g.mul(g.mul(x, inv), weight);
}

/**
 * GELU, tanh form (GPT-2's "gelu_new"): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). Written exactly as
 * onnxruntime's FastGeluFusion expects (Pow → Mul → Add → Mul → Tanh → Add → Mul with Mul(x, 0.5)).
 */
export function geluTanh(g: GraphBuilder, x: string): string {
  const cube = g.node("Pow", [x, g.constFloat(3)]);
  const inner = g.mul(g.add(x, g.mul(cube, g.constFloat(0.044715))), g.constFloat(Math.sqrt(2 / Math.PI)));
  return g.mul(g.mul(x, g.constFloat(0.5)), g.add(g.tanh(inner), g.constFloat(1)));
}

/** GELU with erf: 0.5·x·(1 + erf(x/√2)). */
export function geluErf(g: GraphBuilder, x: string): string {
  return g.mul(g.mul(x, g.constFloat(0.5)), g.add(g.node("Erf", [g.mul(x, g.constFloat(Math.SQRT1_2))]), g.constFloat(1)));
}

/** The 2-D stream (N, n·hd) as heads (B, n, T, hd). */
export function splitHeads(g: GraphBuilder, x: string, batchTime: string, n: number, hd: number): string {
  const shape = g.concat([batchTime, g.constInt64([n, hd])], 0); // [B, T, n, hd]
  return g.transpose(g.node("Reshape", [x, shape]), [0, 2, 1, 3]); // (B, T, n, hd) → (B, n, T, hd)
}

/**
 * Scaled dot-product attention over cached and new keys, grouped-query heads included (head h reads kv head
 * ⌊h / (H / KV)⌋, as HF's repeat_kv). q: (B, H, T, hd); k, v: (B, KV, T, hd) for the new positions.
 * Returns y (N, H·hd) on the 2-D stream and the keys/values of all positions, named `present` when given.
 */
export function attention(
  g: GraphBuilder,
  q: string,
  k: string,
  v: string,
  bias: string,
  shape: { heads: number; kvHeads: number; headDim: number },
  past: { k: string; v: string } | undefined,
  present: { k: string; v: string } | undefined,
): { y: string; k: string; v: string } {
  const { heads: H, kvHeads: KV, headDim: hd } = shape;
  const kAll = past ? g.node("Concat", [past.k, k], { axis: 2 }, present ? { outputs: [present.k] } : {}) : k; // (B, KV, S, hd)
  const vAll = past ? g.node("Concat", [past.v, v], { axis: 2 }, present ? { outputs: [present.v] } : {}) : v; // (B, KV, S, hd)
  let kh = kAll;
  let vh = vAll;
  if (KV !== H) {
    const rep = H / KV;
    kh = g.reshape(g.node("Tile", [g.unsqueeze(kAll, [2]), g.constInt64([1, 1, rep, 1, 1])]), [0, H, -1, hd]); // (B, H, S, hd)
    vh = g.reshape(g.node("Tile", [g.unsqueeze(vAll, [2]), g.constInt64([1, 1, rep, 1, 1])]), [0, H, -1, hd]); // (B, H, S, hd)
  }
  const scores = g.add(g.mul(g.matMul(q, g.transpose(kh, [0, 1, 3, 2])), g.constFloat(1 / Math.sqrt(hd))), bias); // (B, H, T, S)
  const probs = g.softmax(scores, -1);
  const y = g.reshape(g.transpose(g.matMul(probs, vh), [0, 2, 1, 3]), [-1, H * hd]); // (B, H, T, hd) → (B, T, H, hd) → (N, H·hd)
  return { y, k: kAll, v: vAll };
}

/**
 * x · W' (+ b) for a weight matrix in float32 (one Gemm, bias fused) or float16 (`half`: x rounded to float16, the
 * Gemm in float16, its result widened back and the float32 bias added; vectors stay float32). Everything around the
 * products (norms, attention, softmax, the residual stream) stays float32 either way.
 */
function product(g: GraphBuilder, x: string, weight: string, bias: string | undefined, transB: boolean, half: boolean): string {
  if (!half) return g.gemm(x, weight, bias, { transB });
  const y = g.cast(g.gemm(g.cast(x, DataType.FLOAT16), weight, undefined, { transB }), DataType.FLOAT);
  return bias ? g.add(y, bias) : y;
}

/** x · W (+ b) for x (N, in) and a weight stored [in, out] (GPT-2's Conv1D): one Gemm, bias fused. */
export function conv1d(g: GraphBuilder, x: string, weight: string, bias?: string, half = false): string {
  return product(g, x, weight, bias, false, half);
}

/** x · Wᵀ (+ b) for x (N, in) and a weight stored [out, in] (torch Linear): one Gemm with transB, bias fused. */
export function linear(g: GraphBuilder, x: string, weight: string, bias?: string, half = false): string {
  return product(g, x, weight, bias, true, half);
}

/** Rows of an embedding table for `ids`, as float32 whatever the table's storage. */
export function embed(g: GraphBuilder, table: string, ids: string, half = false): string {
  const rows = g.gather(table, ids);
  return half ? g.cast(rows, DataType.FLOAT) : rows;
}

/**
 * The final norm, the LM head and the graph's outputs for `kind`. `x` is the residual stream (N, D); `norm` the
 * final norm; `head` the [V, D] matrix (tied: the embedding itself, used with transB so that it is not stored twice).
 * - causal-lm: `logits` (B, T, V);  step: `logits` (B, V) of each row's last position;
 * - score: `logprob` (B) = Σ_t response_mask[b, t] · log softmax(logits[b, t])[targets[b, t]].
 */
export function lmHeadOutputs(
  g: GraphBuilder,
  kind: PolicyGraphKind,
  inputs: GraphInputs,
  x: string,
  norm: (x: string) => string,
  head: string,
  vocab: number,
  width: number,
  half = false,
): void {
  const { batch, sequence } = DIMS;
  if (kind === "step") {
    // Only the last position is needed: slice before the norm, as models/*.ts do with lastOnly.
    const rows = g.node("Reshape", [x, g.concat([inputs.batchTime, g.constInt64([width])], 0)]); // (B, T, D)
    const last = g.node("Slice", [rows, g.constInt64([-1]), g.constInt64([Number.MAX_SAFE_INTEGER]), g.constInt64([1])]); // (B, 1, D)
    g.output("logits", DataType.FLOAT, [batch, vocab], product(g, norm(g.reshape(last, [-1, width])), head, undefined, true, half)); // (B, V)
    return;
  }
  const flat = product(g, norm(x), head, undefined, true, half); // (N, V)
  const outShape = g.concat([inputs.batchTime, g.constInt64([vocab])], 0); // [B, T, V]
  if (kind === "causal-lm") {
    g.node("Reshape", [flat, outShape], {}, { outputs: ["logits"] });
    g.output("logits", DataType.FLOAT, [batch, sequence, vocab]);
    return;
  }
  const logits = g.node("Reshape", [flat, outShape]); // (B, T, V)
  const targets = g.input("targets", DataType.INT64, [batch, sequence]);
  const responseMask = g.input("response_mask", DataType.FLOAT, [batch, sequence]);
  const logp = g.node("LogSoftmax", [logits], { axis: -1 }); // (B, T, V)
  const picked = g.squeeze(g.node("GatherElements", [logp, g.unsqueeze(targets, [2])], { axis: 2 }), [2]); // (B, T)
  g.node("ReduceSum", [g.mul(picked, responseMask), g.constInt64([1])], { keepdims: 0 }, { outputs: ["logprob"] }); // (B)
  g.output("logprob", DataType.FLOAT, [batch]);
}

/** Declares the present.N.key/value outputs of the cached kinds. */
export function declarePresent(g: GraphBuilder, layers: number, kvHeads: number, headDim: number): void {
  const dims: Dim[] = [DIMS.batch, kvHeads, DIMS.total, headDim];
  for (let i = 0; i < layers; i++) {
    g.output(`present.${i}.key`, DataType.FLOAT, dims);
    g.output(`present.${i}.value`, DataType.FLOAT, dims);
  }
}

/** Names of the present outputs of layer i (cached kinds) or undefined (score). */
export function presentNames(kind: PolicyGraphKind, i: number): { k: string; v: string } | undefined {
  return kind === "score" ? undefined : { k: `present.${i}.key`, v: `present.${i}.value` };
}
