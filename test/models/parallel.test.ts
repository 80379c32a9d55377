/**
 * DataParallel: sharded log-probs and gradients over worker threads equal the single-thread ones, and replicas
 * follow optimizer updates.
 * Run: node --import tsx --test test/models/parallel.test.ts
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { Adam, DataParallel, initBackend, loadModel, makeBatch, sequenceLogProbs, valueAndGrads } from "../../models/index.js";
import { FIXTURES, maxAbsDiff } from "./helpers.js";

const PAIRS = [
  { prompt: [0, 5, 17], response: [9, 9, 4, 1] },
  { prompt: [0, 8], response: [30, 12, 1] },
  { prompt: [0, 3, 3, 3], response: [7] },
  { prompt: [0], response: [11, 12, 13, 14, 15] },
  { prompt: [0, 44], response: [2, 1] },
];
const WEIGHTS = [1, -0.5, 2, 0.25, -1];

describe("DataParallel on wasm (2 threads)", async () => {
  await initBackend("wasm");
  const { model } = loadModel(join(FIXTURES, "llama"));
  const dp = await DataParallel.create(model, { threads: 2 });
  after(async () => {
    await dp.close();
    model.dispose();
  });

  const reference = () => {
    const batch = makeBatch(PAIRS);
    const w = tf.tensor1d(WEIGHTS);
    let logprobs: number[] = [];
    const { value, grads } = valueAndGrads(model, () => {
      const lp = sequenceLogProbs(model, batch);
      logprobs = Array.from(lp.dataSync());
      return lp.mul(w).sum() as tf.Scalar;
    });
    tf.dispose([value, w]);
    batch.dispose();
    return { logprobs, grads };
  };

  it("matches single-thread log-probs and gradients", async () => {
    assert.equal(dp.threads, 2);
    const ref = reference();
    const got = await dp.weightedLogProbGrads(PAIRS, WEIGHTS);
    assert.ok(maxAbsDiff(got.logprobs, ref.logprobs) < 1e-4);
    assert.deepEqual(Object.keys(got.grads).sort(), Object.keys(ref.grads).sort());
    for (const [name, g] of Object.entries(ref.grads)) assert.ok(maxAbsDiff(got.grads[name].dataSync(), g.dataSync()) < 1e-4, name);
    const fwd = await dp.logProbs(PAIRS);
    assert.ok(maxAbsDiff(fwd.logprobs, ref.logprobs) < 1e-4);
    tf.dispose([ref.grads, got.grads]);
  });

  it("workers follow optimizer updates of the model", async () => {
    const opt = new Adam();
    const first = await dp.weightedLogProbGrads(PAIRS, WEIGHTS);
    opt.apply(model.params, first.grads, 1e-2);
    tf.dispose(first.grads);
    const ref = reference();
    const got = await dp.weightedLogProbGrads(PAIRS, WEIGHTS);
    assert.ok(maxAbsDiff(got.logprobs, ref.logprobs) < 1e-4, "worker replicas are stale");
    tf.dispose([ref.grads, got.grads]);
    opt.dispose();
  });
});
