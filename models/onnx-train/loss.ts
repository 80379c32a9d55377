/**
 * The loss at the top of a training graph: from the per-row summed log-probs `logprob` [B] to the scalar loss and
 * ∂loss/∂logprob [B], in graph ops. The preference losses are lib/sppo/losses.ts's four (same formulas, same
 * layout: the first B/2 rows are the chosen responses, the last B/2 their rejected partners), each multiplied by the
 * input `loss_scale` (a micro-batch's share of its step). "weighted" is Σ_b weights[b]·logprob[b], the general
 * form (cross-entropy pretraining is weights = −1/tokens).
 *
 * Inputs it declares: weighted → `weights` [B]; the others → `ref_logprob` [B], `win_rate` [B] (sppo only),
 * `eta` () and `loss_scale` ().
 */
import { DataType, type GraphBuilder } from "../../lib/onnx/index.js";
import { DIMS } from "../onnx/blocks.js";

/** What the top of a training graph computes. */
export type TrainLoss = "sppo" | "sppo_hard" | "dpo" | "ipo" | "weighted";

export const TRAIN_LOSSES: readonly TrainLoss[] = ["sppo", "sppo_hard", "dpo", "ipo", "weighted"];

/** The row count of `v` [B] as a float scalar. */
function countOf(g: GraphBuilder, v: string): string {
  return g.cast(g.squeeze(g.node("Shape", [v], { start: 0, end: 1 }), [0]), DataType.FLOAT);
}

/** mean(v)·scale as a scalar, and scale/n (the factor of each row's derivative). */
function scaledMean(g: GraphBuilder, v: string, scale: string): { loss: string; perRow: string } {
  const n = countOf(g, v);
  return { loss: g.mul(g.reduceMean(v, [0], false), scale), perRow: g.div(scale, n) };
}

/** Declares the loss's inputs and computes `loss` (scalar) and `dlogprob` [B]. */
export function lossHead(g: GraphBuilder, kind: TrainLoss, logprob: string): { loss: string; dlogprob: string } {
  const { batch } = DIMS;
  if (kind === "weighted") {
    const weights = g.input("weights", DataType.FLOAT, [batch]);
    return { loss: g.reduceSum(g.mul(logprob, weights), [0], false), dlogprob: weights };
  }
  const ref = g.input("ref_logprob", DataType.FLOAT, [batch]);
  const eta = g.input("eta", DataType.FLOAT, []);
  const scale = g.input("loss_scale", DataType.FLOAT, []);
  const delta = g.sub(logprob, ref); // (B) Δ = log πθ − log π_ref
  const two = g.constFloat(2);
  if (kind === "sppo") {
    const winRate = g.input("win_rate", DataType.FLOAT, [batch]);
    const err = g.sub(delta, g.mul(g.sub(winRate, g.constFloat(0.5)), eta)); // Δ − η(P̂ − ½)
    const { loss, perRow } = scaledMean(g, g.mul(err, err), scale);
    return { loss, dlogprob: g.mul(err, g.mul(perRow, two)) };
  }
  const [w, l] = g.nodeOutputs("Split", [delta], { axis: 0 }, { outputCount: 2 }); // chosen, rejected (B/2 each)
  const half = g.div(eta, two); // 1/(2β) with β = 1/η
  if (kind === "sppo_hard") {
    const ew = g.sub(w, half);
    const el = g.add(l, half);
    const { loss, perRow } = scaledMean(g, g.add(g.mul(ew, ew), g.mul(el, el)), scale);
    const f = g.mul(perRow, two);
    return { loss, dlogprob: g.concat([g.mul(ew, f), g.mul(el, f)], 0) };
  }
  if (kind === "ipo") {
    const err = g.sub(g.sub(w, l), half);
    const { loss, perRow } = scaledMean(g, g.mul(err, err), scale);
    const dw = g.mul(err, g.mul(perRow, two));
    return { loss, dlogprob: g.concat([dw, g.neg(dw)], 0) };
  }
  // dpo: −log σ(z), z = β(Δ_w − Δ_l), as softplus(−z) = relu(−z) + log(1 + e^{−|z|}); d/dz = −σ(−z).
  const beta = g.div(g.constFloat(1), eta);
  const z = g.mul(g.sub(w, l), beta);
  const value = g.add(g.relu(g.neg(z)), g.log(g.add(g.constFloat(1), g.exp(g.neg(g.node("Abs", [z]))))));
  const { loss, perRow } = scaledMean(g, value, scale);
  const dw = g.mul(g.neg(g.sigmoid(g.neg(z))), g.mul(perRow, beta));
  return { loss, dlogprob: g.concat([dw, g.neg(dw)], 0) };
}
