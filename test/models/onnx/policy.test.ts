/**
 * The onnxruntime engine against the tfjs engine (models/sample.ts, models/score.ts) on tiny GPT-2 and Llama models:
 * seeded sampling gives the same tokens, log-probs agree within 1e-4 (per step and summed), rows that stop on EOS
 * leave the batch without changing the others, scoring matches with padding and in the order given; refresh swaps
 * the weights; options are checked; the generator's engine shape.
 * Run: node --import tsx --test test/models/onnx/policy.test.ts
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type CausalLM,
  initBackend,
  type LoadedModel,
  llamaConfig,
  loadModel,
  modelFromTensors,
  type SampleOptions,
  sampleIds,
  scorePairs,
} from "../../../models/index.js";
import { createOrtPolicy, type OrtPolicy } from "../../../models/onnx/index.js";
import { FIXTURES, MIXED_ROWS } from "../helpers.js";
import { randomWeights } from "./helpers.js";

const TOL = 1e-4;

before(async () => {
  await initBackend("cpu");
});

/** Both engines sample with `options`; tokens must be equal and log-probs within TOL. Returns the tfjs results. */
async function sameSamples(model: CausalLM, policy: OrtPolicy, prompts: number[][], options: SampleOptions) {
  const want = sampleIds(model, prompts, options);
  const got = await policy.sample(prompts, options);
  assert.equal(got.length, want.length);
  want.forEach((w, b) => {
    assert.deepEqual(got[b].tokenIds, w.tokenIds, `row ${b}: tokens`);
    assert.equal(got[b].finished, w.finished, `row ${b}: finished`);
    assert.ok(Math.abs(got[b].logprob - w.logprob) < TOL, `row ${b}: logprob ${got[b].logprob} vs ${w.logprob}`);
    for (const [t, lp] of w.stepLogprobs.entries()) assert.ok(Math.abs(got[b].stepLogprobs[t] - lp) < TOL, `row ${b} step ${t}`);
  });
  return want;
}

const PROMPTS = [[0, 5, 7], [0, 9], [0, 3, 4, 8, 2, 6], [0, 11, 12], [0, 13]];

for (const family of ["gpt2", "llama"]) {
  describe(`${family} fixture: onnxruntime against tfjs`, () => {
    let loaded: LoadedModel;
    let policy: OrtPolicy;
    before(async () => {
      loaded = loadModel(join(FIXTURES, family));
      policy = await createOrtPolicy(join(FIXTURES, family), { intraOpThreads: 1, prepare: ["sample", "score"] });
    });
    after(async () => {
      await policy.dispose();
      loaded.model.dispose();
    });

    it("samples the same tokens with the same log-probs: plain, tempered, top-k, top-p, greedy", async () => {
      for (const options of [
        { seed: 7, maxNewTokens: 10 },
        { seed: 8, maxNewTokens: 10, temperature: 0.7, topP: 0.9 },
        { seed: 9, maxNewTokens: 8, temperature: 1.3, topK: 5 },
        { seed: 10, maxNewTokens: 6, temperature: 0 },
        { seed: 2 ** 40 + 3, maxNewTokens: 6, streamOffset: 17, padId: 4 },
      ]) {
        const results = await sameSamples(loaded.model, policy, PROMPTS, options);
        assert.ok(results.every((r) => r.tokenIds.length === options.maxNewTokens));
      }
    });

    it("per-row seeds (rows): a request batched with others draws as alone, and as tfjs does", async () => {
      const options = { maxNewTokens: 10, temperature: 0.9, eosId: 3 };
      const alone = await policy.sample([PROMPTS[0], PROMPTS[0], PROMPTS[0]], { ...options, seed: 42 });
      const rows = MIXED_ROWS;
      const prompts = [PROMPTS[2], PROMPTS[0], PROMPTS[0], PROMPTS[2], PROMPTS[0], PROMPTS[4]];
      const batched = await sameSamples(loaded.model, policy, prompts, { ...options, seed: 0, rows });
      const got = await policy.sample(prompts, { ...options, seed: 0, rows });
      [1, 2, 4].forEach((b, i) => {
        assert.deepEqual(got[b].tokenIds, alone[i].tokenIds, `stream ${i}: tokens`);
        assert.deepEqual(batched[b].tokenIds, alone[i].tokenIds, `stream ${i}: tfjs tokens`);
        assert.ok(Math.abs(got[b].logprob - alone[i].logprob) < TOL, `stream ${i}: ${got[b].logprob} vs ${alone[i].logprob}`);
      });
      const five = await policy.sample([PROMPTS[2], PROMPTS[2]], { ...options, seed: 5 });
      assert.deepEqual([got[0].tokenIds, got[3].tokenIds], five.map((r) => r.tokenIds));
      await assert.rejects(policy.sample(prompts, { rows: rows.slice(1) }), /rows must have one entry per prompt \(6\), got 5/);
      await assert.rejects(policy.sample([[0, 1]], { rows: [{ seed: 1, stream: -2 }] }), /rows\[0\]\.stream must be an integer ≥ 0/);
    });

    it("rows that stop on EOS leave the batch; the others draw exactly as before", async () => {
      const free = sampleIds(loaded.model, PROMPTS, { seed: 21, maxNewTokens: 12 });
      // An EOS that row 0 draws at its third step: row 0 stops there, rows without it run to the end.
      const eosId = free[0].tokenIds[2];
      const results = await sameSamples(loaded.model, policy, PROMPTS, { seed: 21, maxNewTokens: 12, eosId });
      assert.ok(results[0].finished && results[0].tokenIds.length <= 3);
      assert.ok(results.some((r) => !r.finished && r.tokenIds.length === 12), "a row runs past the first stop");
      results.forEach((r, b) => {
        const stop = free[b].tokenIds.indexOf(eosId);
        assert.deepEqual(r.tokenIds, stop < 0 ? free[b].tokenIds : free[b].tokenIds.slice(0, stop + 1), `row ${b}`);
      });
    });

    it("scores equal tfjs's within 1e-4 and a sample's own log-prob, whatever the batching and order", async () => {
      const sampled = await policy.sample(PROMPTS, { seed: 3, maxNewTokens: 9, temperature: 0.8 });
      const pairs = PROMPTS.map((prompt, b) => ({ prompt, response: sampled[b].tokenIds.slice(0, 3 + b) }));
      pairs.push({ prompt: [0, 1, 2, 3, 4, 5, 6], response: [] }, { prompt: [0], response: [5, 5, 5, 5, 5, 5, 5, 5, 5, 5] });
      const want = scorePairs(loaded.model, pairs, { batchSize: 3 });
      for (const batchSize of [1, 3, 16]) {
        const got = await policy.score(pairs, { batchSize, padId: 2 });
        got.forEach((g, i) => {
          assert.equal(g.tokens, pairs[i].response.length);
          assert.ok(Math.abs(g.logprob - want[i].logprob) < TOL, `pair ${i}, batch ${batchSize}: ${g.logprob} vs ${want[i].logprob}`);
        });
        assert.equal(got[5].logprob, 0, "an empty response scores 0");
      }
      const whole = await policy.score(PROMPTS.map((prompt, b) => ({ prompt, response: sampled[b].tokenIds })));
      for (const [b, s] of whole.entries()) assert.ok(Math.abs(s.logprob - sampled[b].logprob) < TOL, `row ${b}: score ${s.logprob} vs sampled ${sampled[b].logprob}`);
    });
  });
}

describe("tied Llama with biases and grouped-query attention (random weights)", () => {
  it("samples and scores as tfjs does", async () => {
    const config = llamaConfig({
      vocab_size: 41,
      hidden_size: 32,
      intermediate_size: 40,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 24,
      tie_word_embeddings: true,
      attention_bias: true,
      rope_theta: 10000,
    });
    const weights = randomWeights(config, 11);
    const model = modelFromTensors(config, weights);
    const policy = await createOrtPolicy({ config, weights }, { intraOpThreads: 1 });
    const sampled = await sameSamples(model, policy, PROMPTS, { seed: 4, maxNewTokens: 14, temperature: 0.9 });
    const pairs = PROMPTS.map((prompt, b) => ({ prompt, response: sampled[b].tokenIds }));
    const want = scorePairs(model, pairs);
    for (const [i, s] of (await policy.score(pairs)).entries()) assert.ok(Math.abs(s.logprob - want[i].logprob) < TOL, `pair ${i}`);
    await policy.dispose();
    model.dispose();
  });
});

describe("refresh, options and the engine shape", () => {
  it("refresh swaps the weights: later calls sample and score the new policy", async () => {
    const config = llamaConfig({ vocab_size: 23, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 16 });
    const first = randomWeights(config, 1);
    const second = randomWeights(config, 2);
    const model2 = modelFromTensors(config, second);
    const policy = await createOrtPolicy({ config, weights: first }, { intraOpThreads: 1, prepare: ["sample", "score"] });
    const options = { seed: 5, maxNewTokens: 8 };
    const before_ = await policy.sample(PROMPTS, options);
    const inFlight = policy.sample(PROMPTS, options); // started on the first weights
    const timing = await policy.refresh({ config, weights: second });
    assert.ok(timing.totalMs >= timing.sessionMs && timing.sessionMs > 0 && timing.graphMs >= 0);
    assert.deepEqual(
      (await inFlight).map((r) => r.tokenIds),
      before_.map((r) => r.tokenIds),
      "a call in flight finishes on the weights it started with",
    );
    await sameSamples(model2, policy, PROMPTS, options);
    const pairs = [{ prompt: [0, 1], response: [2, 3, 4] }];
    assert.ok(Math.abs((await policy.score(pairs))[0].logprob - scorePairs(model2, pairs)[0].logprob) < TOL);
    await policy.dispose();
    await policy.dispose(); // idempotent
    await assert.rejects(policy.sample(PROMPTS, options), /after dispose/);
    model2.dispose();
  });

  it("checks options and ids, naming what is wrong", async () => {
    const policy = await createOrtPolicy(join(FIXTURES, "gpt2"), { intraOpThreads: 1 });
    await assert.rejects(policy.sample([[0, 1]], { topP: 0 }), /topP must be in \(0, 1\]/);
    await assert.rejects(policy.sample([[0, 1]], { maxNewTokens: 0 }), /maxNewTokens must be an integer ≥ 1/);
    await assert.rejects(policy.sample([[]]), /at least one token/);
    await assert.rejects(policy.sample([[0, 61]]), /prompt 0: token id 61 is outside the vocabulary \[0, 61\)/);
    await assert.rejects(policy.sample([new Array(24).fill(3)]), /leaves no room in the context of 24/);
    await assert.rejects(policy.score([{ prompt: [], response: [1] }]), /pair 0 has an empty prompt/);
    await assert.rejects(policy.score([{ prompt: [0], response: new Array(24).fill(1) }]), /25 tokens, more than the context of 24/);
    await assert.rejects(policy.score([{ prompt: [0], response: [1] }], { batchSize: 0 }), /batchSize must be an integer ≥ 1/);
    assert.deepEqual(await policy.sample([]), []);
    await policy.dispose();
    await assert.rejects(createOrtPolicy(join(FIXTURES, "gpt2"), { intraOpThreads: -1 }), /intraOpThreads must be an integer ≥ 0/);
    await assert.rejects(createOrtPolicy(join(FIXTURES, "gpt2"), { graphOptimizationLevel: "max" as "all" }), /graphOptimizationLevel must be one of/);
    await assert.rejects(createOrtPolicy(join(FIXTURES, "missing")), /config\.json: cannot read it/);
  });
});
