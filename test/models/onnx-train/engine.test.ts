/**
 * The onnxruntime train step (models/onnx-train/engine.ts) against the tfjs reference step (models/train-step.ts):
 * same loss, log-probs and gradient norm, with and without micro-batches; the JS optimizers apply exactly the tfjs
 * optimizers' update to the same gradients; clipping follows its formula; and a run resumed from a checkpointed state
 * (weights through safetensors bytes, optimizer state through JSON) stays bit-identical to the uninterrupted run.
 * Run: node --import tsx --test test/models/onnx-train/engine.test.ts
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { createRng } from "../../../lib/rng.js";
import type { LossName } from "../../../lib/sppo/losses.js";
import {
  Adam,
  type CausalLM,
  initBackend,
  loadModel,
  modelFromTensors,
  modelTensors,
  type Optimizer,
  type OptimizerState,
  parseSafetensors,
  RMSprop,
  serializeSafetensors,
} from "../../../models/index.js";
import { ArrayAdam, ArrayRMSprop, clipGradNormInPlace, onnxTrainStep } from "../../../models/onnx-train/index.js";
import { type StepSample, type StepSettings, tfjsStep } from "../../../models/train-step.js";
import { FIXTURES } from "../helpers.js";

/** Three prompts' [chosen, rejected] pairs of different lengths. */
const GROUPS: StepSample[][] = [
  [
    { prompt: [0, 5, 17], response: [9, 9, 4, 1], winRate: 0.8, ref: -12 },
    { prompt: [0, 5, 17], response: [30, 1], winRate: 0.3, ref: -7 },
  ],
  [
    { prompt: [0, 8], response: [30, 12, 1], winRate: 0.7, ref: -10 },
    { prompt: [0, 8], response: [2, 2, 2, 2, 1], winRate: 0.1, ref: -16 },
  ],
  [
    { prompt: [0, 3, 3], response: [7, 1], winRate: 0.6, ref: -6 },
    { prompt: [0, 3, 3], response: [11, 12, 13, 1], winRate: 0.5, ref: -13 },
  ],
];

const settings = (loss: LossName, microBatches: number): StepSettings => ({ loss, eta: 4, selection: "chosen_rejected", microBatches, maxGradNorm: 0.5, learningRate: 1e-3 });

const near = (a: number, b: number, rel = 1e-4) => Math.abs(a - b) <= rel * Math.max(1, Math.abs(b));

function weightsOf(model: CausalLM): Map<string, Float32Array> {
  return new Map([...model.params].map(([n, v]) => [n, new Float32Array(v.dataSync() as Float32Array)]));
}

before(async () => {
  await initBackend("wasm");
});

describe("onnxruntime train step", () => {
  for (const family of ["gpt2", "llama"]) {
    for (const [loss, micro] of [
      ["sppo", 1],
      ["dpo", 2],
    ] as [LossName, number][]) {
      it(`${family}, ${loss}, ${micro} micro-batch(es): loss, log-probs and gradient norm of tfjsStep`, async () => {
        const a = loadModel(join(FIXTURES, family)).model;
        const b = loadModel(join(FIXTURES, family)).model;
        const engine = onnxTrainStep({ intraOpThreads: 2 });
        const tfjsOpt = new RMSprop();
        const want = tfjsStep.step(a, tfjsOpt, GROUPS, settings(loss, micro)) as Awaited<ReturnType<typeof tfjsStep.step>>;
        const got = await engine.step(b, engine.optimizer("rmsprop"), GROUPS, settings(loss, micro));
        assert.ok(near(got.loss, want.loss), `loss ${got.loss} vs ${want.loss}`);
        assert.ok(near(got.gradNorm, want.gradNorm), `grad norm ${got.gradNorm} vs ${want.gradNorm}`);
        for (const [g, row] of got.logprobs.entries()) {
          for (const [j, lp] of row.entries()) assert.ok(near(lp, want.logprobs[g][j]), `log-prob [${g}][${j}] ${lp} vs ${want.logprobs[g][j]}`);
        }
        // The model was updated in place: the next step sees the new weights.
        const fresh = loadModel(join(FIXTURES, family)).model;
        const initial = weightsOf(fresh);
        fresh.dispose();
        const moved = [...b.params].every(([name, v]) => v.dataSync().some((x, i) => x !== initial.get(name)![i]));
        assert.ok(moved, "the engine did not write every parameter's update back to the model");
        await engine.close();
        tfjsOpt.dispose();
        a.dispose();
        b.dispose();
      });
    }
  }

  it("refuses an optimizer it did not make, with a message naming the fix", async () => {
    const { model } = loadModel(join(FIXTURES, "gpt2"));
    const engine = onnxTrainStep();
    await assert.rejects(engine.step(model, new Adam(), GROUPS, settings("sppo", 1)), /engine\.optimizer/);
    await engine.close();
    model.dispose();
  });
});

describe("JS optimizers = tfjs optimizers on the same gradients", () => {
  const cases: [string, () => Optimizer, () => ArrayAdam | ArrayRMSprop][] = [
    ["Adam", () => new Adam(), () => new ArrayAdam()],
    ["AdamW", () => new Adam({ weightDecay: 0.1, beta1: 0.8 }), () => new ArrayAdam({ weightDecay: 0.1, beta1: 0.8 })],
    ["RMSprop", () => new RMSprop(), () => new ArrayRMSprop()],
  ];
  for (const [name, makeTf, makeArrays] of cases) {
    it(`${name}: three updates agree to 1e-6, and so do the states`, () => {
      const rng = createRng(3);
      const shape = [4, 5];
      const init = Float32Array.from({ length: 20 }, () => rng.normal());
      const variable = tf.variable(tf.tensor(init, shape));
      const params = new Map([["w", variable]]);
      const arrays = new Map([["w", new Float32Array(init)]]);
      const tfOpt = makeTf();
      const arrOpt = makeArrays();
      for (let step = 0; step < 3; step++) {
        const g = Float32Array.from({ length: 20 }, () => rng.normal());
        const gt = tf.tensor(g, shape);
        tfOpt.apply(params, { w: gt }, 0.01);
        gt.dispose();
        arrOpt.applyArrays(arrays, new Map([["w", g]]), 0.01, new Map([["w", shape]]));
      }
      const want = variable.dataSync();
      for (const [i, v] of arrays.get("w")!.entries()) assert.ok(Math.abs(v - want[i]) < 1e-6, `w[${i}] ${v} vs ${want[i]}`);
      const [s1, s2] = [tfOpt.state(), arrOpt.state()];
      assert.equal(s2.kind, s1.kind);
      assert.equal(s2.step, s1.step);
      assert.deepEqual(s2.options, s1.options);
      for (const [slot, { shape: sh, data }] of Object.entries(s1.slots.w)) {
        assert.deepEqual(s2.slots.w[slot].shape, sh);
        for (const [i, v] of s2.slots.w[slot].data.entries()) assert.ok(Math.abs(v - data[i]) < 1e-6, `${slot}[${i}]`);
      }
      tfOpt.dispose();
      variable.dispose();
    });
  }

  it("clipGradNormInPlace scales by maxNorm / (‖g‖ + 1e-6) only above the limit", () => {
    const grads = new Map([
      ["a", Float32Array.of(3, 0)],
      ["b", Float32Array.of(0, 4)],
    ]);
    assert.equal(clipGradNormInPlace(grads, 10), 5);
    assert.deepEqual([...grads.get("a")!], [3, 0]);
    assert.equal(clipGradNormInPlace(grads, 1), 5);
    const s = 1 / (5 + 1e-6);
    assert.ok(Math.abs(grads.get("a")![0] - 3 * s) < 1e-7 && Math.abs(grads.get("b")![1] - 4 * s) < 1e-7);
  });
});

describe("resume on the onnxruntime path", () => {
  it("a run stopped after 2 steps and resumed from its saved state is bit-identical to 4 uninterrupted steps", async () => {
    const run = async (model: CausalLM, state: OptimizerState | undefined, steps: number) => {
      const engine = onnxTrainStep({ intraOpThreads: 2 });
      const opt = engine.optimizer("adam", state);
      for (let s = 0; s < steps; s++) await engine.step(model, opt, GROUPS, settings("sppo", 2));
      await engine.close();
      return opt.state();
    };
    const whole = loadModel(join(FIXTURES, "llama")).model;
    await run(whole, undefined, 4);
    const first = loadModel(join(FIXTURES, "llama")).model;
    const saved = await run(first, undefined, 2);
    // What a checkpoint keeps: the weights as safetensors bytes, the optimizer state as JSON.
    const bytes = serializeSafetensors(modelTensors(first));
    const resumed = modelFromTensors(first.config, parseSafetensors(bytes));
    await run(resumed, JSON.parse(JSON.stringify(saved)) as OptimizerState, 2);
    const [want, got] = [weightsOf(whole), weightsOf(resumed)];
    for (const [name, w] of want) assert.deepEqual(got.get(name), w, `${name} differs after the resume`);
    for (const m of [whole, first, resumed]) m.dispose();
  });
});
