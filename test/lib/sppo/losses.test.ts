/**
 * Loss values and gradients against hand-derived numbers (run: node --import tsx --test test/lib/sppo/losses.test.ts).
 * The cpu backend: exact float32 arithmetic, no native code.
 */
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { dpoLoss, ipoLoss, preferenceLoss, sppoHardLoss, sppoLoss, sppoTarget } from "../../../lib/sppo/losses.js";

function close(actual: number, expected: number, tol = 1e-5, what = "value"): void {
  assert.ok(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)), `${what}: ${actual} != ${expected}`);
}
function closeAll(actual: ArrayLike<number>, expected: readonly number[], tol = 1e-5, what = "value"): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) close(actual[i], expected[i], tol, `${what}[${i}]`);
}
const v = (xs: number[]) => tf.tensor1d(xs);
const sigma = (z: number) => 1 / (1 + Math.exp(-z));

before(async () => {
  await tf.setBackend("cpu");
});

describe("sppo loss (paper eq. 4.7)", () => {
  // Δ = [0.5, −0.2, 1.0], P̂ = [0.8, 0.3, 0.5], η = 2.
  // Targets η(P̂ − ½) = [0.6, −0.4, 0]; residuals r = Δ − target = [−0.1, 0.2, 1.0].
  // L = (1/3) Σ r² = (0.01 + 0.04 + 1.0)/3 = 0.35.
  // ∂L/∂Δ_i = 2 r_i / 3 = [−0.2/3, 0.4/3, 2/3].
  test("value and gradient", () => {
    const delta = v([0.5, -0.2, 1.0]);
    const winRate = v([0.8, 0.3, 0.5]);
    closeAll(sppoTarget(winRate, 2).dataSync(), [0.6, -0.4, 0], 1e-6, "target");
    close(sppoLoss(delta, winRate, 2).dataSync()[0], 0.35, 1e-6, "loss");
    const g = tf.grad((d: tf.Tensor) => sppoLoss(d as tf.Tensor1D, winRate, 2))(delta);
    closeAll(g.dataSync(), [-0.2 / 3, 0.4 / 3, 2 / 3], 1e-6, "dL/dΔ");
  });

  test("the minimiser is Δ = η(P̂ − ½): zero loss and zero gradient there", () => {
    const winRate = v([0.875, 0.125]); // exact in float32
    const delta = v([375, -375]); // η(P̂ − ½) with η = 1000 (paper β = 1e-3)
    close(sppoLoss(delta, winRate, 1000).dataSync()[0], 0, 1e-6, "loss");
    closeAll(tf.grad((d: tf.Tensor) => sppoLoss(d as tf.Tensor1D, winRate, 1000))(delta).dataSync(), [0, 0], 1e-6, "grad");
  });

  test("rejects bad inputs", () => {
    assert.throws(() => sppoLoss(v([1, 2]), v([0.5]), 1), /same length/);
    assert.throws(() => sppoLoss(v([1]), v([0.5]), 0), /eta must be a positive/);
    assert.throws(() => sppoLoss(v([]), v([]), 1), /empty batch/);
  });
});

describe("sppo_hard loss (TRL)", () => {
  // β = 0.5 so 1/(2β) = 1. Δ_w = [0.5, 2.0], Δ_l = [−0.2, 0.0].
  // Pair 1: (0.5 − 1)² + (−0.2 + 1)² = 0.25 + 0.64 = 0.89; pair 2: (2 − 1)² + (0 + 1)² = 2. L = (0.89 + 2)/2 = 1.445.
  // ∂L/∂Δ_w = 2(Δ_w − 1)/2 = [−0.5, 1.0]; ∂L/∂Δ_l = 2(Δ_l + 1)/2 = [0.8, 1.0].
  test("value and gradients", () => {
    const w = v([0.5, 2.0]);
    const l = v([-0.2, 0.0]);
    close(sppoHardLoss(w, l, 0.5).dataSync()[0], 1.445, 1e-6, "loss");
    const [gw, gl] = tf.grads((a: tf.Tensor, b: tf.Tensor) => sppoHardLoss(a as tf.Tensor1D, b as tf.Tensor1D, 0.5))([w, l]);
    closeAll(gw.dataSync(), [-0.5, 1.0], 1e-6, "dL/dΔw");
    closeAll(gl.dataSync(), [0.8, 1.0], 1e-6, "dL/dΔl");
  });

  test("equals the sppo loss with P̂_w = 1, P̂_l = 0, up to the factor 2 of its per-pair mean", () => {
    const w = v([0.3, -1.1]);
    const l = v([0.7, 0.2]);
    const hard = sppoHardLoss(w, l, 0.25).dataSync()[0];
    const soft = sppoLoss(tf.concat([w, l]) as tf.Tensor1D, v([1, 1, 0, 0]), 4).dataSync()[0];
    close(hard, 2 * soft, 1e-6, "sppo_hard vs 2·sppo");
  });
});

describe("dpo loss", () => {
  // β = 2, Δ_w = [0.3, −0.1], Δ_l = [0.1, 0.4]: z = β(Δ_w − Δ_l) = [0.4, −1.0].
  // ℓ(z) = −log σ(z) = log(1 + e^{−z}): log(1 + e^{−0.4}) = 0.5130152524, log(1 + e) = 1.3132616875; L = mean = 0.9131384700.
  // ∂ℓ/∂z = −σ(−z), so ∂L/∂Δ_w = −β σ(−z)/B = −σ(−z) (B = 2, β = 2) = [−0.4013123399, −0.7310585786],
  // and ∂L/∂Δ_l = +σ(−z) = [0.4013123399, 0.7310585786].
  test("value and gradients", () => {
    const w = v([0.3, -0.1]);
    const l = v([0.1, 0.4]);
    close(dpoLoss(w, l, 2).dataSync()[0], 0.91313847, 1e-6, "loss");
    close((Math.log1p(Math.exp(-0.4)) + Math.log1p(Math.exp(1))) / 2, 0.91313847, 1e-8, "hand value");
    const [gw, gl] = tf.grads((a: tf.Tensor, b: tf.Tensor) => dpoLoss(a as tf.Tensor1D, b as tf.Tensor1D, 2))([w, l]);
    closeAll(gw.dataSync(), [-sigma(-0.4), -sigma(1)], 1e-6, "dL/dΔw");
    closeAll(gl.dataSync(), [sigma(-0.4), sigma(1)], 1e-6, "dL/dΔl");
    closeAll(gw.dataSync(), [-0.40131234, -0.73105858], 1e-6, "dL/dΔw literal");
  });

  test("stays finite far from the decision boundary: −log σ(−200) = 200", () => {
    close(dpoLoss(v([0]), v([100]), 2).dataSync()[0], 200, 1e-6, "loss");
    close(dpoLoss(v([100]), v([0]), 2).dataSync()[0], 0, 1e-6, "loss");
  });
});

describe("ipo loss", () => {
  // β = 0.5 so 1/(2β) = 1. Δ_w = [0.5, 2.0], Δ_l = [−0.2, 0.0]: d = Δ_w − Δ_l − 1 = [−0.3, 1.0].
  // L = (0.09 + 1)/2 = 0.545. ∂L/∂Δ_w = 2d/2 = [−0.3, 1.0]; ∂L/∂Δ_l = −2d/2 = [0.3, −1.0].
  test("value and gradients", () => {
    const w = v([0.5, 2.0]);
    const l = v([-0.2, 0.0]);
    close(ipoLoss(w, l, 0.5).dataSync()[0], 0.545, 1e-6, "loss");
    const [gw, gl] = tf.grads((a: tf.Tensor, b: tf.Tensor) => ipoLoss(a as tf.Tensor1D, b as tf.Tensor1D, 0.5))([w, l]);
    closeAll(gw.dataSync(), [-0.3, 1.0], 1e-6, "dL/dΔw");
    closeAll(gl.dataSync(), [0.3, -1.0], 1e-6, "dL/dΔl");
  });
});

describe("preferenceLoss layout: chosen half first, rejected half second", () => {
  const delta = v([0.5, 2.0, -0.2, 0.0]); // chosen [0.5, 2.0], rejected [−0.2, 0.0]
  const winRate = v([0.9, 0.7, 0.2, 0.4]);
  test("each name dispatches to its loss with β = 1/η", () => {
    close(preferenceLoss("ipo", delta, winRate, 2).dataSync()[0], 0.545, 1e-6, "ipo");
    close(preferenceLoss("sppo_hard", delta, winRate, 2).dataSync()[0], 1.445, 1e-6, "sppo_hard");
    close(preferenceLoss("dpo", delta, winRate, 2).dataSync()[0], dpoLoss(v([0.5, 2.0]), v([-0.2, 0]), 0.5).dataSync()[0], 1e-6, "dpo");
    close(preferenceLoss("sppo", delta, winRate, 2).dataSync()[0], sppoLoss(delta, winRate, 2).dataSync()[0], 1e-6, "sppo");
  });
  test("gradients flow through the split: ipo ∂L/∂Δ = [−0.3, 1.0, 0.3, −1.0]", () => {
    const g = tf.grad((d: tf.Tensor) => preferenceLoss("ipo", d as tf.Tensor1D, winRate, 2))(delta);
    closeAll(g.dataSync(), [-0.3, 1.0, 0.3, -1.0], 1e-6, "grad");
  });
  test("an odd count cannot be split into pairs", () => {
    assert.throws(() => preferenceLoss("dpo", v([1, 2, 3]), v([0.5, 0.5, 0.5]), 1), /pairs/);
  });
});
