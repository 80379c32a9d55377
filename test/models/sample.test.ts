/**
 * Sampling and scoring on the PyTorch fixtures: reproducible under a seed, rows independent of their batch-mates
 * (also with per-row seeds: a request draws the same tokens alone and batched with others),
 * greedy/top-k/top-p semantics, and score(prompt, sampled response) == Σ per-step log-probs at temperature 1.
 * Run: node --import tsx --test test/models/sample.test.ts
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { initBackend, loadModel, sampleIds, scorePairs } from "../../models/index.js";
import { BACKENDS, FIXTURES, MIXED_ROWS } from "./helpers.js";

const PROMPTS = [[0, 5, 17], [0, 33, 2, 2, 50, 7], [0, 9]];

for (const backend of BACKENDS) {
  describe(`sampling on ${backend}`, () => {
    for (const family of ["gpt2", "llama"]) {
      it(`${family}: same seed → same samples; another seed → others; rows independent of the batch`, async () => {
        await initBackend(backend);
        const { model } = loadModel(join(FIXTURES, family));
        const before = tf.memory().numTensors;
        const a = sampleIds(model, PROMPTS, { seed: 42, maxNewTokens: 10 });
        const b = sampleIds(model, PROMPTS, { seed: 42, maxNewTokens: 10 });
        const c = sampleIds(model, PROMPTS, { seed: 43, maxNewTokens: 10 });
        assert.deepEqual(a.map((r) => r.tokenIds), b.map((r) => r.tokenIds));
        assert.notDeepEqual(a.map((r) => r.tokenIds), c.map((r) => r.tokenIds));
        const alone = sampleIds(model, [PROMPTS[1]], { seed: 42, maxNewTokens: 10, streamOffset: 1 });
        assert.deepEqual(alone[0].tokenIds, a[1].tokenIds);
        assert.ok(Math.abs(alone[0].logprob - a[1].logprob) < 1e-4);
        assert.equal(tf.memory().numTensors, before, "sampling leaked tensors");
        model.dispose();
      });

      it(`${family}: per-row seeds (rows): a request batched with others draws exactly as it does alone`, async () => {
        await initBackend(backend);
        const { model } = loadModel(join(FIXTURES, family));
        const options = { maxNewTokens: 10, temperature: 0.9, eosId: 3 };
        // A request (seed 42, K = 3) of the middle-length prompt, alone: rows use streams 0, 1, 2 of seed 42.
        const alone = sampleIds(model, [PROMPTS[0], PROMPTS[0], PROMPTS[0]], { ...options, seed: 42 });
        // The same request between rows of other requests (longer and shorter prompts, other seeds).
        const rows = MIXED_ROWS;
        const batched = sampleIds(model, [PROMPTS[1], PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2]], { ...options, seed: 0, rows });
        [1, 2, 4].forEach((b, i) => {
          assert.deepEqual(batched[b].tokenIds, alone[i].tokenIds, `stream ${i}: tokens`);
          assert.equal(batched[b].finished, alone[i].finished);
          assert.ok(Math.abs(batched[b].logprob - alone[i].logprob) < 1e-4, `stream ${i}: ${batched[b].logprob} vs ${alone[i].logprob}`);
        });
        // The other requests' rows too: seed 5 alone on the longest prompt, and the 2^40 + 9 row alone.
        const five = sampleIds(model, [PROMPTS[1], PROMPTS[1]], { ...options, seed: 5 });
        assert.deepEqual([batched[0].tokenIds, batched[3].tokenIds], five.map((r) => r.tokenIds));
        assert.deepEqual(batched[5].tokenIds, sampleIds(model, [PROMPTS[2]], { ...options, seed: 2 ** 40 + 9 })[0].tokenIds);
        // rows overrides seed and streamOffset.
        const same = sampleIds(model, [PROMPTS[0]], { ...options, seed: 7, streamOffset: 3, rows: [{ seed: 42, stream: 1 }] });
        assert.deepEqual(same[0].tokenIds, alone[1].tokenIds);
        model.dispose();
      });

      it(`${family}: score of each sampled response == Σ of its per-step log-probs (temperature 0.7, top-p 0.9, EOS)`, async () => {
        await initBackend(backend);
        const { model } = loadModel(join(FIXTURES, family));
        const samples = sampleIds(model, PROMPTS, { seed: 7, maxNewTokens: 12, temperature: 0.7, topP: 0.9, eosId: 3 });
        const scores = scorePairs(model, PROMPTS.map((prompt, i) => ({ prompt, response: samples[i].tokenIds })), { batchSize: 2 });
        samples.forEach((s, i) => {
          const sum = s.stepLogprobs.reduce((x, y) => x + y, 0);
          assert.ok(Math.abs(sum - s.logprob) < 1e-9);
          assert.equal(scores[i].tokens, s.tokenIds.length);
          assert.ok(Math.abs(scores[i].logprob - s.logprob) < 1e-3 * Math.max(1, Math.abs(s.logprob)), `row ${i}: score ${scores[i].logprob} vs sampled ${s.logprob}`);
          if (s.finished) assert.equal(s.tokenIds.at(-1), 3);
          else assert.equal(s.tokenIds.length, 12);
        });
        model.dispose();
      });

      it(`${family}: temperature 0, top-k 1 and a tiny top-p all pick the argmax of the full forward`, async () => {
        await initBackend(backend);
        const { model } = loadModel(join(FIXTURES, family));
        const greedy = sampleIds(model, PROMPTS, { temperature: 0, maxNewTokens: 5 });
        assert.deepEqual(sampleIds(model, PROMPTS, { topK: 1, seed: 3, maxNewTokens: 5 }).map((r) => r.tokenIds), greedy.map((r) => r.tokenIds));
        assert.deepEqual(sampleIds(model, PROMPTS, { topP: 1e-6, seed: 9, maxNewTokens: 5 }).map((r) => r.tokenIds), greedy.map((r) => r.tokenIds));
        // Greedy decoding re-derived with full (uncached) forward passes.
        for (const [i, prompt] of PROMPTS.entries()) {
          const seq = [...prompt];
          for (let t = 0; t < 5; t++) {
            const ids = tf.tensor2d([seq], undefined, "int32");
            const { logits } = model.forward(ids);
            const last = logits.slice([0, seq.length - 1, 0], [1, 1, logits.shape[2]]);
            seq.push(last.argMax(-1).dataSync()[0]);
            tf.dispose([ids, logits, last]);
          }
          assert.deepEqual(greedy[i].tokenIds, seq.slice(prompt.length));
        }
        model.dispose();
      });
    }
  });
}

describe("sampling options", () => {
  it("are checked, naming the option", async () => {
    await initBackend("cpu");
    const { model } = loadModel(join(FIXTURES, "gpt2"));
    assert.throws(() => sampleIds(model, PROMPTS, { temperature: -1 }), /temperature/);
    assert.throws(() => sampleIds(model, PROMPTS, { topP: 0 }), /topP/);
    assert.throws(() => sampleIds(model, PROMPTS, { topK: 1.5 }), /topK/);
    assert.throws(() => sampleIds(model, PROMPTS, { maxNewTokens: 0 }), /maxNewTokens/);
    assert.throws(() => sampleIds(model, [[]]), /at least one token/);
    assert.throws(() => sampleIds(model, PROMPTS, { rows: [{ seed: 1, stream: 0 }] }), /rows must have one entry per prompt \(3\), got 1/);
    assert.throws(() => sampleIds(model, [[0, 1]], { rows: [{ seed: Number.NaN, stream: 0 }] }), /rows\[0\]\.seed must be a finite number/);
    assert.throws(() => sampleIds(model, [[0, 1]], { rows: [{ seed: 1, stream: -1 }] }), /rows\[0\]\.stream must be an integer ≥ 0/);
    assert.throws(() => sampleIds(model, [[0, 1]], { rows: [{ seed: 1, stream: 0.5 }] }), /rows\[0\]\.stream must be an integer ≥ 0/);
    // The context is 24 positions: a 20-token prompt leaves room for 4 new tokens only.
    const long = sampleIds(model, [Array(20).fill(4)], { maxNewTokens: 50 });
    assert.equal(long[0].tokenIds.length, 4);
    model.dispose();
  });
});
