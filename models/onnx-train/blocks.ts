/**
 * Forward and backward pieces of a training graph, in standard ONNX ops (plus com.microsoft FusedMatMul, which every
 * onnxruntime build has on CPU): each `*Forward` returns its output and what its backward needs; each `*Backward`
 * takes the upstream gradient and returns the input gradient, adding parameter gradients to a `GradSink`. The
 * formulas are the exact derivatives of the forward functions in models/layers.ts (the tfjs reference), so the two
 * engines agree to float rounding; test/models/onnx-train checks them against tfjs's autodiff.
 *
 * The residual stream is 2-D, (N, width) with N = B·T, so every weight product is one Gemm (MLAS, multi-threaded)
 * whose transposes are Gemm attributes: no Transpose node in the backward pass of a linear layer.
 */
import { DataType, float, type GraphBuilder } from "../../lib/onnx/index.js";

/** The contrib-op domain of onnxruntime (FusedMatMul). */
export const MS_DOMAIN = "com.microsoft";

/** Collects gradient contributions per parameter (a tied embedding gets two) and emits them as graph outputs. */
export class GradSink {
  private readonly parts = new Map<string, string[]>();
  add(param: string, value: string): void {
    const list = this.parts.get(param);
    if (list) list.push(value);
    else this.parts.set(param, [value]);
  }
  /** Declares `grad.<name>` for every parameter that received a contribution; returns the names. */
  emit(g: GraphBuilder, shapes: ReadonlyMap<string, number[]>): string[] {
    const out: string[] = [];
    for (const [param, values] of this.parts) {
      const name = gradOutput(param);
      g.node(values.length === 1 ? "Identity" : "Sum", values, {}, { outputs: [name] });
      g.output(name, DataType.FLOAT, shapes.get(param));
      out.push(param);
    }
    return out;
  }
}

/** The output name of a parameter's gradient. */
export function gradOutput(param: string): string {
  return `grad.${param}`;
}

/** a·b over the last two axes with optional transposes and a scale, batched over leading axes (no Transpose node). */
export function fusedMatMul(g: GraphBuilder, a: string, b: string, options: { transA?: boolean; transB?: boolean; alpha?: number } = {}): string {
  return g.node(
    "FusedMatMul",
    [a, b],
    { transA: options.transA ? 1 : 0, transB: options.transB ? 1 : 0, alpha: float(options.alpha ?? 1) },
    { domain: MS_DOMAIN },
  );
}

/** Sum over rows of a 2-D value: a bias gradient. */
function columnSum(g: GraphBuilder, dy: string): string {
  return g.reduceSum(dy, [0]);
}

/**
 * Backward of y = x·W + b with W stored [in, out] (GPT-2's Conv1D). Returns dx; adds dW = xᵀ·dy and db = Σ dy.
 */
export function conv1dBackward(g: GraphBuilder, grads: GradSink, dy: string, x: string, weight: string, bias?: string): string {
  grads.add(weight, g.gemm(x, dy, undefined, { transA: true })); // (in, out)
  if (bias) grads.add(bias, columnSum(g, dy));
  return g.gemm(dy, weight, undefined, { transB: true }); // (N, in)
}

/** Backward of y = x·Wᵀ + b with W stored [out, in] (torch Linear). Returns dx; adds dW = dyᵀ·x and db = Σ dy. */
export function linearBackward(g: GraphBuilder, grads: GradSink, dy: string, x: string, weight: string, bias?: string): string {
  grads.add(weight, g.gemm(dy, x, undefined, { transA: true })); // (out, in)
  if (bias) grads.add(bias, columnSum(g, dy));
  return g.matMul(dy, weight); // (N, in)
}

/** LayerNorm over the last axis, keeping the row mean and 1/σ for the backward pass. */
export function layerNormForward(g: GraphBuilder, x: string, weight: string, bias: string, eps: number): { y: string; mean: string; invStd: string } {
  const [y, mean, invStd] = g.nodeOutputs("LayerNormalization", [x, weight, bias], { axis: -1, epsilon: float(eps) }, { outputCount: 3 });
  return { y, mean, invStd };
}

/**
 * Backward of LayerNorm (x̂ = (x − μ)/σ, y = x̂·w + b): dw = Σ dy·x̂, db = Σ dy, and
 * dx = (1/σ)·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) with dx̂ = dy·w.
 */
export function layerNormBackward(
  g: GraphBuilder,
  grads: GradSink,
  dy: string,
  x: string,
  saved: { mean: string; invStd: string },
  weight: string,
  bias: string,
): string {
  const xhat = g.mul(g.sub(x, saved.mean), saved.invStd); // (N, C)
  grads.add(weight, columnSum(g, g.mul(dy, xhat)));
  grads.add(bias, columnSum(g, dy));
  const dxhat = g.mul(dy, weight);
  const meanD = g.reduceMean(dxhat, [-1], true); // (N, 1)
  const meanDX = g.reduceMean(g.mul(dxhat, xhat), [-1], true); // (N, 1)
  return g.mul(g.sub(g.sub(dxhat, meanD), g.mul(xhat, meanDX)), saved.invStd);
}

/** RMSNorm (Llama) as models/layers.ts: x·r·w with r = 1/√(mean(x²) + eps); keeps x·r for the backward pass. */
export function rmsNormForward(g: GraphBuilder, x: string, weight: string, eps: number): { y: string; xn: string; r: string } {
  const meanSquare = g.reduceMean(g.mul(x, x), [-1], true); // (N, 1)
  const r = g.node("Reciprocal", [g.sqrt(g.add(meanSquare, g.constFloat(eps)))]); // (N, 1)
  const xn = g.mul(x, r);
  return { y: g.mul(xn, weight), xn, r };
}

/** Backward of RMSNorm: dw = Σ dy·x̂, dx = r·(dx̂ − x̂·mean(dx̂·x̂)) with x̂ = x·r, dx̂ = dy·w. */
export function rmsNormBackward(g: GraphBuilder, grads: GradSink, dy: string, saved: { xn: string; r: string }, weight: string): string {
  grads.add(weight, columnSum(g, g.mul(dy, saved.xn)));
  const dxn = g.mul(dy, weight);
  const meanDX = g.reduceMean(g.mul(dxn, saved.xn), [-1], true); // (N, 1)
  return g.mul(g.sub(dxn, g.mul(saved.xn, meanDX)), saved.r);
}

/** GPT-2's MLP activations with what their backward passes keep. */
export type Activation = "gelu_new" | "gelu" | "relu";

/**
 * The activation's value and its slope act'(x), which is all the backward pass needs (elementwise passes over the
 * (N, 4C) activations are the largest cost of a step after the matrix products, so each form uses as few as it can).
 */
export function activationForward(g: GraphBuilder, kind: Activation, x: string): { y: string; slope: string } {
  if (kind === "relu") return { y: g.relu(x), slope: g.cast(g.node("Greater", [x, g.constFloat(0)]), DataType.FLOAT) };
  if (kind === "gelu") {
    // 0.5·x·(1 + erf(x/√2)); slope 0.5·(1 + erf(x/√2)) + x·φ(x), φ the standard normal density.
    const cdf = g.mul(g.add(g.erf(g.mul(x, g.constFloat(Math.SQRT1_2))), g.constFloat(1)), g.constFloat(0.5));
    const pdf = g.mul(g.exp(g.mul(g.mul(x, x), g.constFloat(-0.5))), g.constFloat(1 / Math.sqrt(2 * Math.PI)));
    return { y: g.mul(x, cdf), slope: g.add(cdf, g.mul(x, pdf)) };
  }
  // GPT-2's tanh form 0.5·x·(1 + tanh z), z = c·(x + 0.044715·x³), written as x·s with s = σ(2z) = 0.5·(1 + tanh z);
  // slope s + x·s·(1 − s)·2z', 2z' = 2c·(1 + 3·0.044715·x²) (models/layers.ts's hand-written gradient, rearranged).
  const c = Math.sqrt(2 / Math.PI);
  const x2 = g.mul(x, x);
  const s = g.sigmoid(g.mul(x, g.add(g.mul(x2, g.constFloat(2 * c * 0.044715)), g.constFloat(2 * c)))); // σ(2z)
  const dz2 = g.mul(x, g.add(g.mul(x2, g.constFloat(6 * c * 0.044715)), g.constFloat(2 * c))); // x·2z'
  const slope = g.add(s, g.mul(g.mul(s, g.sub(g.constFloat(1), s)), dz2));
  return { y: g.mul(x, s), slope };
}

/** Attention geometry. */
export interface Heads {
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** (N, n·hd) → (B, n, T, hd). */
export function splitHeads(g: GraphBuilder, x: string, batchTime: string, n: number, hd: number): string {
  const shape = g.concat([batchTime, g.constInt64([n, hd])], 0); // [B, T, n, hd]
  return g.transpose(g.node("Reshape", [x, shape]), [0, 2, 1, 3]); // (B, n, T, hd)
}

/** (B, n, T, hd) → (N, n·hd). */
export function mergeHeads(g: GraphBuilder, x: string, width: number): string {
  return g.reshape(g.transpose(x, [0, 2, 1, 3]), [-1, width]); // (B, T, n, hd) → (N, n·hd)
}

/**
 * GPT-2's fused projection (N, 3C) as q, k, v heads (B, H, T, hd): one Transpose to (3, B, H, T, hd) and a split
 * along its outer axis (contiguous copies), instead of a strided split and three transposes.
 */
export function splitQkv(g: GraphBuilder, qkv: string, batchTime: string, H: number, hd: number): [string, string, string] {
  const shape = g.concat([batchTime, g.constInt64([3, H, hd])], 0); // [B, T, 3, H, hd]
  const heads = g.transpose(g.node("Reshape", [qkv, shape]), [2, 0, 3, 1, 4]); // (3, B, H, T, hd)
  const parts = g.nodeOutputs("Split", [heads, g.constInt64([1, 1, 1])], { axis: 0 }, { outputCount: 3 });
  return parts.map((p) => g.squeeze(p, [0])) as [string, string, string];
}

/** The backward of `splitQkv`: dq, dk, dv (B, H, T, hd) → (N, 3C), one Concat and one Transpose. */
export function mergeQkv(g: GraphBuilder, dq: string, dk: string, dv: string, width: number): string {
  const stacked = g.concat([dq, dk, dv].map((t) => g.unsqueeze(t, [0])), 0); // (3, B, H, T, hd)
  return g.reshape(g.transpose(stacked, [1, 3, 0, 2, 4]), [-1, 3 * width]); // (B, T, 3, H, hd) → (N, 3C)
}

/**
 * Causal self-attention over a whole right-padded batch (no cache), grouped-query heads as models/layers.ts: the
 * `rep` query heads of a kv group are stacked along time and share one product with the group's keys. q is
 * (B, H, T, hd); k, v are (B, KV, T, hd); bias (B, 1, T, T). Returns y (N, H·hd) and the saved values.
 */
export function attentionForward(g: GraphBuilder, q: string, k: string, v: string, bias: string, h: Heads): { y: string; saved: AttentionSaved } {
  const { heads: H, kvHeads: KV, headDim: hd } = h;
  const qg = g.reshape(q, [0, KV, -1, hd]); // (B, KV, rep·T, hd)
  const scores = g.reshape(fusedMatMul(g, qg, k, { transB: true, alpha: 1 / Math.sqrt(hd) }), [0, H, -1, 0]); // (B, H, T, S), scaled
  const scaled = g.add(scores, bias);
  const probs = g.reshape(g.softmax(scaled, -1), [0, KV, -1, 0]); // (B, KV, rep·T, S)
  const out = g.reshape(g.matMul(probs, v), [0, H, -1, hd]); // (B, H, T, hd)
  return { y: mergeHeads(g, out, H * hd), saved: { qg, k, v, probs } };
}

/** What attention's backward pass reads. */
export interface AttentionSaved {
  qg: string;
  k: string;
  v: string;
  probs: string;
}

/**
 * Backward of attention: dy (N, H·hd) → dq (B, H, T, hd), dk and dv (B, KV, T, hd). Softmax's backward is
 * p·(dp − Σ dp·p); the bias is constant.
 */
export function attentionBackward(g: GraphBuilder, dy: string, batchTime: string, s: AttentionSaved, h: Heads): { dq: string; dk: string; dv: string } {
  const { heads: H, kvHeads: KV, headDim: hd } = h;
  const dOut = g.reshape(splitHeads(g, dy, batchTime, H, hd), [0, KV, -1, hd]); // (B, KV, rep·T, hd)
  const dProbs = fusedMatMul(g, dOut, s.v, { transB: true }); // (B, KV, rep·T, S)
  const dv = fusedMatMul(g, s.probs, dOut, { transA: true }); // (B, KV, S, hd)
  const dScores = g.mul(s.probs, g.sub(dProbs, g.reduceSum(g.mul(dProbs, s.probs), [-1], true))); // (B, KV, rep·T, S)
  const scale = 1 / Math.sqrt(hd);
  const dqg = fusedMatMul(g, dScores, s.k, { alpha: scale }); // (B, KV, rep·T, hd)
  const dk = fusedMatMul(g, dScores, s.qg, { transA: true, alpha: scale }); // (B, KV, S, hd)
  return { dq: g.reshape(dqg, [0, H, -1, hd]), dk, dv };
}
