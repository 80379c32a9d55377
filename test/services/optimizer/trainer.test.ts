/**
 * The trainer core on a tiny GPT-2 with the cpu backend: SPPO moves log-likelihoods the right way, telemetry is
 * consistent, gradient accumulation does not change the step, the schedule is the documented one, policy versions
 * carry the right hash, and a stopped-and-resumed run ends where an uninterrupted one does.
 * Run: node --import tsx --test test/services/optimizer/trainer.test.ts
 */
import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as tf from "@tensorflow/tfjs";
import { Algorithm, OptimizerKind, PairSelection, TrainRequestSchema } from "../../../gen/sppo/v1/optimizer_pb.js";
import type { TelemetryEvent, TrainStep } from "../../../gen/sppo/v1/telemetry_pb.js";
import { Code, RpcError } from "../../../lib/errors.js";
import { scorePairs } from "../../../models/index.js";
import { listCheckpoints, verifyCheckpoint } from "../../../services/optimizer/checkpoint.js";
import { sha256Concat } from "../../../services/optimizer/files.js";
import { Trainer } from "../../../services/optimizer/trainer.js";
import { configAt, endMsg, makeBaseModel, makeExamples, maxAbsDiff, rpcCode, snapshotParams, startMsg, twoCheckpoints } from "./fixtures.js";

const roots: string[] = [];
function newRoot(): string {
  const root = makeBaseModel();
  roots.push(root);
  return root;
}
before(async () => {
  await tf.setBackend("cpu");
});
after(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

const steps = (events: TelemetryEvent[]): TrainStep[] =>
  events.filter((e) => e.payload.case === "trainStep").map((e) => e.payload.value as TrainStep);

describe("trainer", () => {
  test("SPPO steps raise the chosen responses' log-likelihood and lower the rejected ones'", () => {
    const root = newRoot();
    const config = configAt(root, { learningRate: 0.01, optimizer: "adam", eta: 8, batchSize: 8, warmupRatio: 0, epochs: 15 });
    const examples = makeExamples(config.modelDir, { prompts: 4, k: 3 });
    const trainer = Trainer.open(config);
    const events: TelemetryEvent[] = [];
    events.push(...trainer.start(startMsg(4)));
    for (const ex of examples) events.push(...trainer.addExample(ex));
    events.push(...trainer.end(endMsg()));
    const ts = steps(events);
    assert.equal(ts.length, 15, "4 prompts × 2 responses = one step of 8 per epoch, 15 epochs");
    // Step 1 runs on π_θ = π_ref: Δ is 0 up to float rounding, and the loss is the mean squared target.
    assert.ok(Math.abs(ts[0].chosenDelta) < 1e-4 && Math.abs(ts[0].rejectedDelta) < 1e-4, `step 1 Δ ${ts[0].chosenDelta} ${ts[0].rejectedDelta}`);
    assert.equal(ts[0].examples, 8);
    assert.ok(ts[0].gradNorm > 0 && ts[0].examplesPerSecond > 0 && ts[0].tokensPerSecond > 0);
    assert.ok(ts.at(-1)!.loss < ts[0].loss / 2, `loss ${ts[0].loss} → ${ts.at(-1)!.loss}`);

    // Recompute the log-likelihoods of each prompt's chosen (argmax P̂) and rejected (argmin P̂) response.
    const byPrompt = new Map<string, typeof examples>();
    for (const ex of examples) byPrompt.set(ex.promptId, [...(byPrompt.get(ex.promptId) ?? []), ex]);
    let chosenUp = 0;
    let rejectedDown = 0;
    for (const group of byPrompt.values()) {
      const sorted = [...group].sort((a, b) => b.winRate - a.winRate);
      const [chosen, rejected] = [sorted[0], sorted.at(-1)!];
      const [c, r] = scorePairs(trainer.policy, [chosen, rejected].map((e) => ({ prompt: e.promptTokenIds, response: e.responseTokenIds })));
      if (c.logprob > chosen.referenceLogprob) chosenUp++;
      if (r.logprob < rejected.referenceLogprob) rejectedDown++;
    }
    assert.equal(chosenUp, 4, "every chosen response became more likely");
    assert.equal(rejectedDown, 4, "every rejected response became less likely");
    assert.ok(ts.at(-1)!.chosenDelta > 0 && ts.at(-1)!.rejectedDelta < 0);

    // The new version is published with the hash of its files, in manifest order.
    const published = events.filter((e) => e.payload.case === "policyPublished");
    assert.equal(published.length, 1);
    const v1 = trainer.versionFiles(1);
    assert.equal(v1.policy.version, 1);
    assert.equal(v1.policy.family, "gpt2");
    assert.deepEqual(v1.files.map((f) => f.name), ["config.json", "model.safetensors"]);
    assert.equal(v1.policy.sha256, sha256Concat(v1.files.map((f) => join(v1.dir, f.name))));
    assert.deepEqual(trainer.listVersions().map((v) => v.version), [0, 1]);
    trainer.dispose();
  });

  for (const [algorithm, pairSelection] of [["sppo", "all"], ["sppo_hard", "chosen_rejected"], ["dpo", "chosen_rejected"], ["ipo", "chosen_rejected"]] as const) {
    test(`${algorithm} with ${pairSelection} selection opens a margin Δ_chosen − Δ_rejected > 0`, () => {
      const root = newRoot();
      const config = configAt(root, { algorithm, pairSelection, learningRate: 0.01, optimizer: "adam", eta: 8, batchSize: 12, warmupRatio: 0, epochs: 8 });
      const examples = makeExamples(config.modelDir, { prompts: 4, k: 3, seed: 11 });
      const trainer = Trainer.open(config);
      trainer.start(startMsg(4));
      const ts = steps([...examples.flatMap((ex) => trainer.addExample(ex)), ...trainer.end(endMsg())]);
      // 12 responses per step = 6 prompts' pairs (more than the 4 there are: one partial step per epoch), or
      // 12/3 = 4 prompts × K = 3 with all-K selection.
      assert.equal(ts.length, 8);
      assert.equal(ts[0].examples, pairSelection === "all" ? 12 : 8);
      const last = ts.at(-1)!;
      assert.ok(last.chosenDelta - last.rejectedDelta > 0.5, `${algorithm}: margin ${last.chosenDelta - last.rejectedDelta}`);
      trainer.dispose();
    });
  }

  test("the learning rate warms up over ceil(0.25·S) steps and decays linearly to 0 at S", () => {
    const root = newRoot();
    const config = configAt(root, { learningRate: 1e-3, batchSize: 2, warmupRatio: 0.25 });
    const examples = makeExamples(config.modelDir, { prompts: 8, k: 2 });
    const trainer = Trainer.open(config);
    trainer.start(startMsg(8));
    const ts = steps(examples.flatMap((ex) => trainer.addExample(ex)).concat(trainer.end(endMsg())));
    // S = 8 steps (one prompt each), warm-up 2: lr_s = 1e-3·s/2 for s < 2, then 1e-3·(8 − s)/6.
    const expected = [0, 0.5, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6].map((x) => x * 1e-3);
    assert.equal(ts.length, 8);
    for (const [i, s] of ts.entries()) assert.ok(Math.abs(s.learningRate - expected[i]) < 1e-12, `step ${i}: ${s.learningRate} vs ${expected[i]}`);
    trainer.dispose();
  });

  test("gradient accumulation splits a step without changing it", () => {
    const weights = (accumulation: number) => {
      const root = newRoot();
      const config = configAt(root, { learningRate: 0.01, optimizer: "adam", batchSize: 8, gradientAccumulation: accumulation, warmupRatio: 0, algorithm: "dpo", eta: 0.5 });
      const examples = makeExamples(config.modelDir, { prompts: 4, k: 3, seed: 5 });
      const trainer = Trainer.open(config);
      trainer.start(startMsg(4));
      const ts = steps(examples.flatMap((ex) => trainer.addExample(ex)));
      const snap = snapshotParams(trainer.policy.params);
      trainer.dispose();
      return { snap, step: ts[0] };
    };
    const one = weights(1);
    const three = weights(3); // micro-batches of 2, 1 and 1 prompts
    assert.ok(Math.abs(one.step.loss - three.step.loss) < 1e-6, `loss ${one.step.loss} vs ${three.step.loss}`);
    assert.ok(Math.abs(one.step.gradNorm - three.step.gradNorm) < 1e-5, `grad norm ${one.step.gradNorm} vs ${three.step.gradNorm}`);
    // Adam's first step is lr·g/(|g| + ε), which magnifies float rounding in tiny gradient entries: 1e-3 of lr.
    assert.ok(maxAbsDiff(one.snap, three.snap) < 1e-5, `weights differ by ${maxAbsDiff(one.snap, three.snap)}`);
  });

  test("a run stopped and resumed from its checkpoint ends with the same weights as one that was not", () => {
    const overrides = { learningRate: 0.01, optimizer: "rmsprop", batchSize: 4, gradientAccumulation: 2, warmupRatio: 0.25, epochs: 2, eta: 4 };
    // Uninterrupted.
    const rootA = newRoot();
    const configA = configAt(rootA, overrides);
    const examples = makeExamples(configA.modelDir, { prompts: 8, k: 3, seed: 9 });
    const a = Trainer.open(configA);
    a.start(startMsg(8));
    const stepsA = steps([...examples.flatMap((ex) => a.addExample(ex)), ...a.end(endMsg())]);
    const weightsA = snapshotParams(a.policy.params);
    const shaA = a.listVersions()[1].sha256;
    a.dispose();

    // Stopped after 5 prompts and one example of the 6th (mid-batch, mid-group), then resumed in a new trainer.
    const rootB = newRoot();
    const configB = configAt(rootB, overrides);
    const b1 = Trainer.open(configB);
    b1.start(startMsg(8));
    const cut = 5 * 3 + 1;
    const stepsB = steps(examples.slice(0, cut).flatMap((ex) => b1.addExample(ex)));
    const saved = b1.saveCheckpoint();
    assert.equal(saved.iteration, 1);
    b1.dispose();
    const b2 = Trainer.open(configB);
    assert.equal(b2.steps, stepsB.length);
    b2.start(startMsg(8)); // continues the open iteration
    // The client replays the whole iteration; what was consumed before the stop is skipped.
    stepsB.push(...steps([...examples.flatMap((ex) => b2.addExample(ex)), ...b2.end(endMsg())]));
    const weightsB = snapshotParams(b2.policy.params);
    assert.equal(stepsB.length, stepsA.length);
    for (const [i, s] of stepsB.entries()) assert.ok(Math.abs(s.loss - stepsA[i].loss) < 1e-6, `step ${i + 1} loss ${s.loss} vs ${stepsA[i].loss}`);
    const diff = maxAbsDiff(weightsA, weightsB);
    assert.ok(diff < 1e-6, `weights differ by ${diff}`);
    assert.ok(maxAbsDiff(weightsA, snapshotParams(Trainer.open(configAt(newRoot())).policy.params)) > 1e-3, "training moved the weights");
    // Same backend, same order of operations: bit-identical files.
    assert.equal(b2.listVersions()[1].sha256, shaA);
    b2.dispose();
  });

  test("a damaged checkpoint is detected, named, and skipped for an older one", () => {
    const { config, older, newer } = twoCheckpoints(newRoot());
    assert.notEqual(older.name, newer.name);
    const weights = join(newer.dir, "model", "model.safetensors");
    const bytes = readFileSync(weights);
    bytes[bytes.length - 1] ^= 0x40;
    writeFileSync(weights, bytes);
    assert.throws(() => verifyCheckpoint(newer.dir), (err: Error) => RpcError.is(err, "checkpoint") && err.message.includes("model.safetensors") && /does not match/.test(err.message));
    assert.equal(verifyCheckpoint(older.dir), older.sha256);
    const resumed = Trainer.open(config);
    assert.equal(resumed.steps, 1, "resumed from the older checkpoint (after one step)");
    assert.deepEqual(listCheckpoints(config.checkpointDir).map((c) => c.name), [newer.name, older.name]);
    resumed.dispose();
  });

  test("bad streams fail with the right status, naming the field", () => {
    const root = newRoot();
    const config = configAt(root);
    const examples = makeExamples(config.modelDir, { prompts: 1, k: 2 });
    const t = Trainer.open(config);
    assert.equal(rpcCode(() => t.addExample(examples[0])), Code.FAILED_PRECONDITION);
    assert.equal(rpcCode(() => t.start(startMsg(1, {}, 2))), Code.FAILED_PRECONDITION);
    assert.equal(rpcCode(() => t.start({ ...startMsg(1), baseVersion: 3 })), Code.FAILED_PRECONDITION);
    assert.equal(rpcCode(() => t.start(startMsg(0))), Code.INVALID_ARGUMENT);
    assert.equal(rpcCode(() => t.start(startMsg(1, { algorithm: Algorithm.DPO, pairSelection: PairSelection.ALL }))), Code.INVALID_ARGUMENT);
    assert.equal(rpcCode(() => t.start(startMsg(1, { batchSize: 0 }))), Code.INVALID_ARGUMENT);
    t.start(startMsg(1, { optimizer: OptimizerKind.ADAM }));
    assert.throws(() => t.addExample({ ...examples[0], responseTokenIds: [3, 99] }), /example\.response_token_ids\[1\]: token id 99 is outside the vocabulary/);
    assert.throws(() => t.addExample({ ...examples[0], winRate: 1.5 }), /example\.win_rate/);
    assert.throws(() => t.addExample({ ...examples[0], sampleIndex: 2 }), /example\.sample_index/);
    assert.throws(() => t.addExample({ ...examples[0], groupSize: 1 }), /example\.group_size: must be ≥ 2/);
    assert.equal(rpcCode(() => t.addExample({ ...examples[0], iteration: 2 })), Code.FAILED_PRECONDITION);
    assert.equal(rpcCode(() => t.handle(create(TrainRequestSchema, {}))), Code.INVALID_ARGUMENT);
    t.dispose();
  });
});
