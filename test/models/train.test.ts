/**
 * Training primitives: the summed log-prob of a target response rises under gradient steps on every backend;
 * gradients agree across backends and with finite differences; optimizers match hand-derived updates and resume
 * exactly from their serialised state; clipping and the schedule follow their formulas.
 * Run: node --import tsx --test test/models/train.test.ts
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import {
  Adam,
  type CausalLM,
  clipGradNorm,
  initBackend,
  loadModel,
  makeBatch,
  type Optimizer,
  optimizerFromState,
  RMSprop,
  sequenceLogProbs,
  valueAndGrads,
  warmupLinearSchedule,
} from "../../models/index.js";
import { BACKENDS, FIXTURES } from "./helpers.js";

const PAIRS = [
  { prompt: [0, 5, 17], response: [9, 9, 4, 1] },
  { prompt: [0, 8], response: [30, 12, 1] },
];

function logProbs(model: CausalLM): number[] {
  const batch = makeBatch(PAIRS);
  const lp = sequenceLogProbs(model, batch);
  const out = Array.from(lp.dataSync());
  lp.dispose();
  batch.dispose();
  return out;
}

for (const backend of BACKENDS) {
  describe(`training on ${backend}`, () => {
    for (const family of ["gpt2", "llama"]) {
      it(`${family}: Adam steps raise the target responses' summed log-prob`, async () => {
        await initBackend(backend);
        const { model } = loadModel(join(FIXTURES, family));
        const before = logProbs(model);
        const tensorsBefore = tf.memory().numTensors;
        const opt = new Adam();
        const batch = makeBatch(PAIRS);
        for (let step = 0; step < 8; step++) {
          const { value, grads } = valueAndGrads(model, () => sequenceLogProbs(model, batch).sum().neg() as tf.Scalar);
          assert.ok(Object.keys(grads).includes(family === "gpt2" ? "transformer.wte.weight" : "model.embed_tokens.weight"), "embedding gradient (gather) missing");
          const { grads: clipped } = clipGradNorm(grads, 5);
          opt.apply(model.params, clipped, 1e-2);
          tf.dispose([value, grads, clipped]);
        }
        batch.dispose();
        const slots = 2 * model.params.size; // Adam keeps m and v per parameter
        assert.equal(tf.memory().numTensors - tensorsBefore, slots, "a train step leaked tensors");
        opt.dispose();
        const after = logProbs(model);
        for (let i = 0; i < PAIRS.length; i++) assert.ok(after[i] > before[i] + 1, `row ${i}: ${before[i]} → ${after[i]}`);
        model.dispose();
      });
    }

    it("gradients match central finite differences", async () => {
      await initBackend(backend);
      const { model } = loadModel(join(FIXTURES, "llama"));
      const batch = makeBatch(PAIRS);
      const f = () => sequenceLogProbs(model, batch).sum() as tf.Scalar;
      const { value, grads } = valueAndGrads(model, f);
      for (const [name, index] of [["model.embed_tokens.weight", 5 * 32 + 3], ["model.layers.1.self_attn.k_proj.weight", 17], ["lm_head.weight", 9 * 32 + 1]] as const) {
        const p = model.params.get(name)!;
        const data = p.dataSync().slice();
        const eps = 1e-2;
        const at = (delta: number) => {
          const d = data.slice();
          d[index] += delta;
          p.assign(tf.tensor(d, p.shape));
          return tf.tidy(() => f().dataSync()[0]);
        };
        const numeric = (at(eps) - at(-eps)) / (2 * eps);
        p.assign(tf.tensor(data, p.shape));
        const analytic = grads[name].dataSync()[index];
        assert.ok(Math.abs(numeric - analytic) < 2e-2 * Math.max(1, Math.abs(analytic)), `${name}[${index}]: numeric ${numeric} vs analytic ${analytic}`);
      }
      tf.dispose([value, grads]);
      batch.dispose();
      model.dispose();
    });
  });
}

describe("optimizers", () => {
  it("Adam and RMSprop take the hand-derived first steps", async () => {
    await initBackend("cpu");
    const p = tf.variable(tf.tensor1d([1, -2]));
    const params = new Map([["w", p]]);
    const g = { w: tf.tensor1d([0.5, -4]) };
    const adam = new Adam();
    adam.apply(params, g, 0.1);
    // First Adam step: m̂ = g, v̂ = g², so the update is lr · g / (|g| + ε) ≈ lr · sign(g).
    assert.ok(Math.abs(p.dataSync()[0] - 0.9) < 1e-6 && Math.abs(p.dataSync()[1] + 1.9) < 1e-6);
    const q = tf.variable(tf.tensor1d([1, -2]));
    const rms = new RMSprop();
    rms.apply(new Map([["w", q]]), g, 0.01);
    // v = 0.01 g², update = lr · g / (0.1 |g| + ε) = 0.1 · sign(g).
    assert.ok(Math.abs(q.dataSync()[0] - 0.9) < 1e-5 && Math.abs(q.dataSync()[1] + 1.9) < 1e-5);
    tf.dispose([p, q, g.w]);
    adam.dispose();
    rms.dispose();
  });

  it("resume from serialised state is exact", async () => {
    await initBackend("cpu");
    for (const make of [() => new Adam({ weightDecay: 0.01 }), () => new RMSprop()]) {
      const run = (steps: number[], opt: Optimizer = make(), w = tf.variable(tf.tensor1d([0.3, -0.7, 1.1]))) => {
        for (const s of steps) {
          const g = { w: tf.tensor1d([Math.sin(s), Math.cos(s), s / 10]) };
          opt.apply(new Map([["w", w]]), g, 0.05);
          g.w.dispose();
        }
        return { opt, w };
      };
      const straight = run([1, 2, 3, 4]);
      const first = run([1, 2]);
      const state = JSON.parse(JSON.stringify(first.opt.state()));
      const resumed = run([3, 4], optimizerFromState(state), first.w);
      assert.deepEqual(Array.from(resumed.w.dataSync()), Array.from(straight.w.dataSync()));
      assert.deepEqual(resumed.opt.state(), straight.opt.state());
      for (const r of [straight, first]) {
        r.opt.dispose();
        r.w.dispose();
      }
      resumed.opt.dispose();
    }
  });

  it("clipGradNorm scales to the global norm; the schedule warms up then decays linearly", async () => {
    await initBackend("cpu");
    const grads = { a: tf.tensor1d([3, 0]), b: tf.tensor1d([0, 4]) }; // global norm 5
    const { grads: clipped, norm } = clipGradNorm(grads, 1);
    assert.ok(Math.abs(norm - 5) < 1e-6);
    assert.ok(Math.abs(clipped.a.dataSync()[0] - 0.6) < 1e-5 && Math.abs(clipped.b.dataSync()[1] - 0.8) < 1e-5);
    const loose = clipGradNorm(grads, 10);
    assert.deepEqual(Array.from(loose.grads.a.dataSync()), [3, 0]);
    tf.dispose([grads, clipped, loose.grads]);
    const lr = warmupLinearSchedule(1, 10, 110);
    assert.deepEqual([0, 5, 10, 60, 110, 200].map(lr), [0, 0.5, 1, 0.5, 0, 0]);
  });
});
