/**
 * The fast training path's gradients (models/onnx-train: forward + hand-written backward as one onnxruntime graph)
 * against the tfjs reference's autodiff: for the tiny GPT-2 and Llama fixtures and every loss (sppo, sppo_hard, dpo,
 * ipo, and the weighted log-prob sum), the loss, the per-row log-probs and every parameter's gradient agree to 1e-4
 * relative; the architecture variants (tied Llama with biases; GPT-2 with erf GELU and with ReLU) too; and two runs
 * give bit-identical results. And against PyTorch: the fixtures' loss values, log-probs and the gradients of sppo and
 * dpo computed in float64 by an independent implementation (scripts/torch/make_grad_fixtures.py, which wrote
 * test/models/fixtures/<family>/grads.{json,safetensors}).
 * Run: node --import tsx --test test/models/onnx-train/gradients.test.ts
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { type LossName, preferenceLoss } from "../../../lib/sppo/losses.js";
import { type CausalLM, gpt2Config, initBackend, llamaConfig, loadModel, type ModelConfig, makeBatch, modelFromTensors, sequenceLogProbs, valueAndGrads } from "../../../models/index.js";
import { type LossInputs, OrtGradients, TRAIN_LOSSES, type TrainLoss } from "../../../models/onnx-train/index.js";
import { readSafetensors } from "../../../models/safetensors.js";
import { FIXTURES } from "../helpers.js";
import { randomWeights } from "../onnx/helpers.js";

/** Rows of different lengths (right padding inside the batch); the first half chosen, the second rejected. */
const PAIRS = [
  { prompt: [0, 5, 17], response: [9, 9, 4, 1] },
  { prompt: [0, 8], response: [30, 12, 1] },
  { prompt: [0, 3, 3, 3], response: [7] },
  { prompt: [0], response: [11, 12, 13, 14, 15, 16, 2] },
];
const REF = [-8, -7.5, -9, -12];
const WIN_RATE = [0.9, 0.2, 0.6, 0.3];
const WEIGHTS = [1, -0.5, 2, 0.25];
const ETA = 5;
const SCALE = 0.75;

function lossInputs(kind: TrainLoss): LossInputs {
  return kind === "weighted" ? { kind, weights: WEIGHTS } : { kind, ref: REF, winRate: WIN_RATE, eta: ETA, scale: SCALE };
}

/** The tfjs reference: loss, log-probs and gradients by autodiff (the optimizer service's own formulation). */
function reference(model: CausalLM, kind: TrainLoss) {
  const batch = makeBatch(PAIRS);
  let logprobs: number[] = [];
  const { value, grads } = valueAndGrads(model, () => {
    const lp = sequenceLogProbs(model, batch);
    logprobs = Array.from(lp.dataSync());
    if (kind === "weighted") return lp.mul(tf.tensor1d(WEIGHTS)).sum() as tf.Scalar;
    return tf.mul(preferenceLoss(kind as LossName, tf.sub(lp, tf.tensor1d(REF)) as tf.Tensor1D, tf.tensor1d(WIN_RATE), ETA), SCALE) as tf.Scalar;
  });
  const loss = value.dataSync()[0];
  const out = new Map(Object.entries(grads).map(([name, g]) => [name, g.dataSync() as Float32Array]));
  tf.dispose([value, grads]);
  batch.dispose();
  return { loss, logprobs, grads: out };
}

/** max |a − b| / max |a| (one tensor's error relative to its scale). */
function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(a[i]));
  }
  return den === 0 ? num : num / den;
}

function weightsOf(model: CausalLM): Map<string, Float32Array> {
  return new Map([...model.params].map(([name, v]) => [name, new Float32Array(v.dataSync() as Float32Array)]));
}

async function assertMatches(model: CausalLM, kinds: readonly TrainLoss[]): Promise<void> {
  const engine = await OrtGradients.create(model.config, { intraOpThreads: 2 });
  try {
    const weights = weightsOf(model);
    for (const kind of kinds) {
      const want = reference(model, kind);
      const got = await engine.run(weights, PAIRS, lossInputs(kind));
      assert.ok(relativeError([want.loss], [got.loss]) < 1e-4, `${kind}: loss ${got.loss} vs ${want.loss}`);
      assert.ok(relativeError(want.logprobs, got.logprobs) < 1e-4, `${kind}: log-probs ${got.logprobs} vs ${want.logprobs}`);
      assert.deepEqual([...got.grads.keys()].sort(), [...want.grads.keys()].sort(), `${kind}: gradient names`);
      for (const [name, g] of want.grads) {
        const err = relativeError(g, got.grads.get(name)!);
        assert.ok(err < 1e-4, `${kind}: gradient of ${name} off by ${err.toExponential(2)} (relative)`);
      }
    }
  } finally {
    await engine.dispose();
  }
}

before(async () => {
  await initBackend("wasm");
});

describe("onnxruntime training gradients = tfjs autodiff", () => {
  const models: CausalLM[] = [];
  after(() => {
    for (const m of models) m.dispose();
  });
  for (const family of ["gpt2", "llama"]) {
    it(`${family} fixture: every loss`, async () => {
      const { model } = loadModel(join(FIXTURES, family));
      models.push(model);
      await assertMatches(model, TRAIN_LOSSES);
    });
  }
  const variants: [string, ModelConfig][] = [
    [
      "llama, tied head, attention and MLP biases",
      llamaConfig({ vocab_size: 40, hidden_size: 24, intermediate_size: 40, num_hidden_layers: 1, num_attention_heads: 6, num_key_value_heads: 3, head_dim: 4, max_position_embeddings: 16, tie_word_embeddings: true, attention_bias: true, mlp_bias: true }),
    ],
    ["gpt2, erf GELU", gpt2Config({ vocab_size: 40, n_embd: 16, n_layer: 1, n_head: 2, n_positions: 16, activation_function: "gelu" })],
    ["gpt2, ReLU", gpt2Config({ vocab_size: 40, n_embd: 16, n_layer: 1, n_head: 2, n_positions: 16, activation_function: "relu" })],
  ];
  for (const [what, config] of variants) {
    it(`${what}: sppo and dpo`, async () => {
      const model = modelFromTensors(config, randomWeights(config, 7));
      models.push(model);
      await assertMatches(model, ["sppo", "dpo"]);
    });
  }

  it("is deterministic: two runs give bit-identical loss, log-probs and gradients", async () => {
    const { model } = loadModel(join(FIXTURES, "llama"));
    models.push(model);
    const engine = await OrtGradients.create(model.config, { intraOpThreads: 2 });
    const weights = weightsOf(model);
    const a = await engine.run(weights, PAIRS, lossInputs("sppo"));
    const b = await engine.run(weights, PAIRS, lossInputs("sppo"));
    await engine.dispose();
    assert.equal(a.loss, b.loss);
    assert.deepEqual(a.logprobs, b.logprobs);
    for (const [name, g] of a.grads) assert.deepEqual(b.grads.get(name), g, name);
  });
});

describe("onnxruntime training gradients = PyTorch (float64, scripts/torch/make_grad_fixtures.py)", () => {
  for (const family of ["gpt2", "llama"]) {
    it(`${family} fixture: every loss's value and log-probs, sppo's and dpo's gradients`, async () => {
      const dir = join(FIXTURES, family);
      const want = JSON.parse(readFileSync(join(dir, "grads.json"), "utf8")) as {
        pairs: typeof PAIRS;
        ref: number[];
        win_rate: number[];
        eta: number;
        scale: number;
        logprobs: number[];
        losses: Record<string, number>;
        grad_losses: TrainLoss[];
      };
      const grads = readSafetensors(join(dir, "grads.safetensors"));
      const { model } = loadModel(dir);
      const engine = await OrtGradients.create(model.config, { intraOpThreads: 2 });
      try {
        const weights = weightsOf(model);
        for (const kind of TRAIN_LOSSES.filter((k) => k !== "weighted")) {
          const got = await engine.run(weights, want.pairs, { kind, ref: want.ref, winRate: want.win_rate, eta: want.eta, scale: want.scale });
          assert.ok(relativeError([want.losses[kind]], [got.loss]) < 1e-4, `${kind}: loss ${got.loss} vs PyTorch ${want.losses[kind]}`);
          assert.ok(relativeError(want.logprobs, got.logprobs) < 1e-4, `${kind}: log-probs ${got.logprobs} vs PyTorch ${want.logprobs}`);
          if (!want.grad_losses.includes(kind)) continue;
          assert.deepEqual([...got.grads.keys()].sort(), [...model.params.keys()].sort(), `${kind}: gradient names`);
          for (const [name, g] of got.grads) {
            const ref = grads.get(`${kind}/${name}`);
            assert.ok(ref, `${kind}/${name} in grads.safetensors`);
            assert.deepEqual(g.length, ref.data.length, `${kind}: size of ${name}`);
            const err = relativeError(ref.data, g);
            assert.ok(err < 1e-4, `${kind}: gradient of ${name} off PyTorch by ${err.toExponential(2)} (relative)`);
          }
        }
      } finally {
        await engine.dispose();
        model.dispose();
      }
    });
  }
});
