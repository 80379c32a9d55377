/**
 * The four training losses of DESIGN §2 on tfjs tensors of Δ = log πθ(y|x) − log π_ref(y|x), each Δ one response's
 * log-prob ratio summed over its tokens. Every loss returns a scalar: the mean over the batch, so that its gradient
 * does not grow with the batch size (the official code and TRL take `.mean()` the same way).
 *
 * η is the SPPO step size and β = 1/η the DPO/IPO temperature (paper: β = 1e-3, η = 1000).
 *
 * - sppo       (paper eq. 4.7, official `sppo_loss`): mean over the selected responses of (Δ − η(P̂ − 1/2))².
 *              With chosen/rejected selection, pass both responses of every pair: the mean over 2B responses is the
 *              official per-pair average of the two squared errors, averaged over pairs.
 * - sppo_hard  (TRL): mean over pairs of (Δ_w − 1/(2β))² + (Δ_l + 1/(2β))², i.e. SPPO with P̂_w = 1, P̂_l = 0.
 * - dpo        mean over pairs of −log σ(β(Δ_w − Δ_l)).
 * - ipo        mean over pairs of (Δ_w − Δ_l − 1/(2β))².
 *
 * Run: pure functions; call them inside `tf.variableGrads`/`tf.grad` or a `tf.tidy`. Tests: test/lib/sppo/losses.test.ts.
 */
import * as tf from "@tensorflow/tfjs";
import { OPTIMIZER_ALGORITHMS, type OptimizerAlgorithm } from "./algorithms.js";

export type LossName = OptimizerAlgorithm;

export const LOSS_NAMES: readonly LossName[] = OPTIMIZER_ALGORITHMS;

/** Losses that compare a chosen with a rejected response (everything but `sppo`). */
export function isPairwise(loss: LossName): boolean {
  return loss !== "sppo";
}

function checkPositive(name: string, value: number): void {
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${name} must be a positive finite number, got ${value}`);
}

function checkSameShape(a: tf.Tensor, b: tf.Tensor, what: string): void {
  if (a.shape.length !== 1 || b.shape.length !== 1 || a.shape[0] !== b.shape[0]) {
    throw new RangeError(`${what}: expected two vectors of the same length, got [${a.shape}] and [${b.shape}]`);
  }
  if (a.shape[0] === 0) throw new RangeError(`${what}: empty batch`);
}

/** The SPPO regression target η(P̂ − 1/2) per response. */
export function sppoTarget(winRate: tf.Tensor1D, eta: number): tf.Tensor1D {
  checkPositive("eta", eta);
  return tf.tidy(() => tf.mul(tf.sub(winRate, 0.5), eta));
}

/** Paper eq. 4.7: mean_i (Δ_i − η(P̂_i − 1/2))². `delta` and `winRate` are [N] over the selected responses. */
export function sppoLoss(delta: tf.Tensor1D, winRate: tf.Tensor1D, eta: number): tf.Scalar {
  checkSameShape(delta, winRate, "sppo loss");
  return tf.tidy(() => tf.mean(tf.square(tf.sub(delta, sppoTarget(winRate, eta)))) as tf.Scalar);
}

/** TRL's sppo_hard: mean over pairs of (Δ_w − 1/(2β))² + (Δ_l + 1/(2β))². */
export function sppoHardLoss(deltaChosen: tf.Tensor1D, deltaRejected: tf.Tensor1D, beta: number): tf.Scalar {
  checkSameShape(deltaChosen, deltaRejected, "sppo_hard loss");
  checkPositive("beta", beta);
  const half = 1 / (2 * beta);
  return tf.tidy(
    () => tf.mean(tf.add(tf.square(tf.sub(deltaChosen, half)), tf.square(tf.add(deltaRejected, half)))) as tf.Scalar,
  );
}

/**
 * −log σ(z) = softplus(−z) = max(−z, 0) + log(1 + e^{−|z|}): finite for any z and differentiable from plain ops.
 * (tfjs's own `logSigmoid` gradient fails inside `tf.grads` on the cpu backend in 4.22: it reads a disposed tensor.)
 */
function negLogSigmoid(z: tf.Tensor): tf.Tensor {
  return tf.add(tf.relu(tf.neg(z)), tf.log1p(tf.exp(tf.neg(tf.abs(z)))));
}

/** DPO: mean over pairs of −log σ(β(Δ_w − Δ_l)), written so that it stays finite for large |z|. */
export function dpoLoss(deltaChosen: tf.Tensor1D, deltaRejected: tf.Tensor1D, beta: number): tf.Scalar {
  checkSameShape(deltaChosen, deltaRejected, "dpo loss");
  checkPositive("beta", beta);
  return tf.tidy(() => tf.mean(negLogSigmoid(tf.mul(tf.sub(deltaChosen, deltaRejected), beta))) as tf.Scalar);
}

/** IPO: mean over pairs of (Δ_w − Δ_l − 1/(2β))². */
export function ipoLoss(deltaChosen: tf.Tensor1D, deltaRejected: tf.Tensor1D, beta: number): tf.Scalar {
  checkSameShape(deltaChosen, deltaRejected, "ipo loss");
  checkPositive("beta", beta);
  const half = 1 / (2 * beta);
  return tf.tidy(() => tf.mean(tf.square(tf.sub(tf.sub(deltaChosen, deltaRejected), half))) as tf.Scalar);
}

/**
 * One entry point for the trainer: the named loss on the selected responses, laid out as `delta`/`winRate` of
 * length N. For the pairwise losses (and for `sppo` with chosen/rejected selection, where the layout does not
 * matter) the first N/2 entries are the chosen responses and the last N/2 their rejected partners, in the same
 * order. Slicing (not `gather`) splits them, because gather's gradient needs UnsortedSegmentSum, which the wasm
 * backend lacks. η is given; the pairwise losses use β = 1/η.
 */
export function preferenceLoss(loss: LossName, delta: tf.Tensor1D, winRate: tf.Tensor1D, eta: number): tf.Scalar {
  checkPositive("eta", eta);
  if (loss === "sppo") return sppoLoss(delta, winRate, eta);
  const n = delta.shape[0];
  if (n % 2 !== 0 || n === 0) throw new RangeError(`${loss} loss needs chosen/rejected pairs: got ${n} responses`);
  return tf.tidy(() => {
    const w = tf.slice(delta, [0], [n / 2]) as tf.Tensor1D; // (B,) chosen
    const l = tf.slice(delta, [n / 2], [n / 2]) as tf.Tensor1D; // (B,) rejected
    const beta = 1 / eta;
    if (loss === "sppo_hard") return sppoHardLoss(w, l, beta);
    if (loss === "dpo") return dpoLoss(w, l, beta);
    return ipoLoss(w, l, beta);
  });
}
