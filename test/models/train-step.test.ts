/**
 * The pure train step (models/train-step.ts): its micro-batch layout, its loss, log-probs and clipped gradients
 * against a hand-derived chain rule over one unsplit batch, and the data-parallel engine against the tfjs one.
 * Run: node --import tsx --test test/models/train-step.test.ts
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import type { LossName } from "../../lib/sppo/losses.js";
import {
  type CausalLM,
  dataParallelStep,
  initBackend,
  loadModel,
  makeBatch,
  type NamedGrads,
  type Optimizer,
  type OptimizerState,
  type StepResult,
  type StepSample,
  type StepSettings,
  sequenceLogProbs,
  stepLayout,
  tfjsStep,
  valueAndGrads,
} from "../../models/index.js";
import { FIXTURES, maxAbsDiff } from "./helpers.js";

await initBackend("wasm");

/** Plain SGD that also records the (clipped) gradients it was handed: the step's gradients become observable. */
class RecordingSgd implements Optimizer {
  grads: Record<string, Float32Array> = {};
  apply(params: ReadonlyMap<string, tf.Variable>, grads: NamedGrads, lr: number): void {
    for (const [name, g] of Object.entries(grads)) {
      this.grads[name] = Float32Array.from(g.dataSync());
      const p = params.get(name)!;
      tf.tidy(() => p.assign(p.sub(g.mul(lr))));
    }
  }
  state(): OptimizerState {
    return { kind: "rmsprop", step: 0, options: {}, slots: {} };
  }
  dispose(): void {}
}

const sample = (prompt: number[], response: number[], winRate: number, ref: number): StepSample => ({ prompt, response, winRate, ref });

/** Three prompts with K = 3 responses each (token ids below the fixtures' vocabulary of 61, EOS = 1). */
const GROUPS_K3: StepSample[][] = [
  [sample([0, 5, 17], [9, 9, 4, 1], 0.7, -14.1), sample([0, 5, 17], [3, 1], 0.2, -7.9), sample([0, 5, 17], [12, 40, 1], 0.6, -12.2)],
  [sample([0, 8], [30, 12, 1], 0.5, -11.5), sample([0, 8], [7, 7, 7, 7, 1], 0.9, -19.0), sample([0, 8], [2, 1], 0.1, -8.3)],
  [sample([0, 3, 3, 3], [7], 0.4, -4.0), sample([0, 3, 3, 3], [11, 1], 0.3, -8.2), sample([0, 3, 3, 3], [44, 45, 1], 0.8, -12.6)],
];
/** The same prompts as [chosen, rejected] pairs. */
const PAIRS: StepSample[][] = GROUPS_K3.map((g) => {
  const byRate = [...g].sort((a, b) => b.winRate - a.winRate);
  return [byRate[0], byRate[2]];
});

function loadFixture(): CausalLM {
  return loadModel(join(FIXTURES, "gpt2")).model;
}

/**
 * The step computed independently: log-probs of all samples in one unsplit batch, ∂loss/∂logp derived by hand for
 * the loss, ∇θ loss = Σ_b ∂loss/∂logp_b · ∇θ logp_b, the global norm and clipping in float64.
 */
function byHand(model: CausalLM, groups: StepSample[][], loss: LossName, eta: number, maxGradNorm: number) {
  const flat = groups.flat();
  const batch = makeBatch(flat.map((s) => ({ prompt: [...s.prompt], response: [...s.response] })), 1);
  const lp = sequenceLogProbs(model, batch);
  const logprobs = Array.from(lp.dataSync());
  lp.dispose();
  const delta = flat.map((s, i) => logprobs[i] - s.ref);
  let value = 0;
  const dLoss = new Array<number>(flat.length).fill(0);
  if (loss === "sppo") {
    // mean_i (Δ_i − η(P̂_i − 1/2))²
    flat.forEach((s, i) => {
      const r = delta[i] - eta * (s.winRate - 0.5);
      value += (r * r) / flat.length;
      dLoss[i] = (2 * r) / flat.length;
    });
  } else {
    // DPO over pairs (chosen at 2p, rejected at 2p + 1): mean_p −log σ(β(Δ_w − Δ_l)), β = 1/η.
    const beta = 1 / eta;
    const pairs = flat.length / 2;
    for (let p = 0; p < pairs; p++) {
      const z = beta * (delta[2 * p] - delta[2 * p + 1]);
      value += Math.log1p(Math.exp(-z)) / pairs;
      const s = 1 / (1 + Math.exp(z)); // σ(−z)
      dLoss[2 * p] = (-beta * s) / pairs;
      dLoss[2 * p + 1] = (beta * s) / pairs;
    }
  }
  const w = tf.tensor1d(dLoss);
  const { value: v, grads } = valueAndGrads(model, () => sequenceLogProbs(model, batch).mul(w).sum() as tf.Scalar);
  const arrays = Object.fromEntries(Object.entries(grads).map(([name, g]) => [name, Float64Array.from(g.dataSync())]));
  tf.dispose([v, w, ...Object.values(grads)]);
  batch.dispose();
  let sq = 0;
  for (const g of Object.values(arrays)) for (const x of g) sq += x * x;
  const norm = Math.sqrt(sq);
  const scale = Math.min(1, maxGradNorm / (norm + 1e-6));
  const clipped = Object.fromEntries(Object.entries(arrays).map(([name, g]) => [name, g.map((x) => x * scale)]));
  return { value, logprobs, norm, clipped };
}

describe("train step", () => {
  test("stepLayout: near-equal micro-batches of groups, chosen before rejected, weights by share of responses", () => {
    const five = Array.from({ length: 5 }, (_, g) => [sample([0], [g], 1, 0), sample([0], [g, 1], 0, 0)]);
    const layout = stepLayout(five, { selection: "chosen_rejected", microBatches: 3 });
    assert.deepEqual(
      layout.map((mb) => mb.origin),
      [
        [[0, 0], [1, 0], [0, 1], [1, 1]],
        [[2, 0], [3, 0], [2, 1], [3, 1]],
        [[4, 0], [4, 1]],
      ],
    );
    assert.deepEqual(layout.map((mb) => mb.weight), [0.4, 0.4, 0.2]);
    assert.deepEqual(layout[0].samples, [five[0][0], five[1][0], five[0][1], five[1][1]]);
    const all = stepLayout(GROUPS_K3, { selection: "all", microBatches: 8 });
    assert.equal(all.length, 3, "never more micro-batches than groups");
    assert.deepEqual(all[1].origin, [[1, 0], [1, 1], [1, 2]]);
    assert.throws(() => stepLayout(GROUPS_K3, { selection: "chosen_rejected", microBatches: 1 }), /group 0: chosen\/rejected selection needs \[chosen, rejected\], got 3/);
    assert.throws(() => stepLayout([], { selection: "all", microBatches: 1 }), /at least one group/);
  });

  for (const [loss, groups, selection] of [
    ["sppo", GROUPS_K3, "all"],
    ["dpo", PAIRS, "chosen_rejected"],
  ] as const) {
    test(`tfjsStep (${loss}, ${selection}, 2 micro-batches) equals the hand-derived step`, () => {
      const model = loadFixture();
      const eta = loss === "sppo" ? 4 : 0.5;
      const maxGradNorm = 0.05; // small enough to clip
      const expected = byHand(model, groups.map((g) => [...g]), loss, eta, maxGradNorm);
      const before = new Map([...model.params].map(([name, p]) => [name, Float32Array.from(p.dataSync())]));
      const sgd = new RecordingSgd();
      const settings: StepSettings = { loss, eta, selection, microBatches: 2, maxGradNorm, learningRate: 0.1 };
      const got = tfjsStep.step(model, sgd, groups, settings) as StepResult;
      assert.ok(Math.abs(got.loss - expected.value) < 1e-5 * Math.max(1, expected.value), `loss ${got.loss} vs ${expected.value}`);
      assert.ok(maxAbsDiff(got.logprobs.flat(), expected.logprobs) < 1e-4, "log-probs");
      assert.ok(Math.abs(got.gradNorm - expected.norm) < 1e-4 * expected.norm, `grad norm ${got.gradNorm} vs ${expected.norm}`);
      assert.ok(got.gradNorm > maxGradNorm, "the step was clipped");
      assert.deepEqual(Object.keys(sgd.grads).sort(), Object.keys(expected.clipped).sort());
      for (const [name, g] of Object.entries(expected.clipped)) {
        assert.ok(maxAbsDiff(sgd.grads[name], g) < 1e-6, `${name}: clipped gradient differs by ${maxAbsDiff(sgd.grads[name], g)}`);
        const p = model.params.get(name)!.dataSync();
        const moved = before.get(name)!.map((x, i) => x - 0.1 * sgd.grads[name][i]);
        assert.ok(maxAbsDiff(p, moved) < 1e-7, `${name}: the update is p − lr·g`);
      }
      model.dispose();
    });
  }

  test("dataParallelStep (2 threads) trains the same step as tfjsStep", async () => {
    const engine = dataParallelStep({ threads: 2 });
    assert.equal(engine.synchronous, false);
    try {
    for (const [loss, groups, selection] of [
      ["sppo", GROUPS_K3, "all"],
      ["ipo", PAIRS, "chosen_rejected"],
    ] as const) {
      const settings: StepSettings = { loss, eta: 2, selection, microBatches: 2, maxGradNorm: 0.05, learningRate: 0.1 };
      const [a, b] = [loadFixture(), loadFixture()];
      const [sgdA, sgdB] = [new RecordingSgd(), new RecordingSgd()];
      const reference = tfjsStep.step(a, sgdA, groups, settings) as StepResult;
      const parallel = await engine.step(b, sgdB, groups, settings);
      assert.ok(Math.abs(parallel.loss - reference.loss) < 1e-5 * Math.max(1, reference.loss), `${loss}: loss ${parallel.loss} vs ${reference.loss}`);
      assert.ok(maxAbsDiff(parallel.logprobs.flat(), reference.logprobs.flat()) < 1e-4, `${loss}: log-probs`);
      assert.ok(Math.abs(parallel.gradNorm - reference.gradNorm) < 1e-4 * reference.gradNorm, `${loss}: grad norm`);
      for (const [name, g] of Object.entries(sgdA.grads)) assert.ok(maxAbsDiff(sgdB.grads[name], g) < 1e-6, `${loss}: ${name}`);
      a.dispose();
      b.dispose();
    }
    } finally {
      await engine.close();
    }
  });
});
