/**
 * Runs in one trainer (services/optimizer/runs.ts): a new run starts from the base, a run that comes back continues
 * its own state bit-identically (even an iteration left open when another run came), runs keep their checkpoints
 * and versions apart, and what cannot be served is refused with the right status. The multi-process scenarios of
 * issue 18 are test/faults/run-identity.test.ts. Run: node --import tsx --test test/services/optimizer/runs.test.ts
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as tf from "@tensorflow/tfjs";
import { type IterationStart, RunIdentitySchema, type TrainingExample } from "../../../gen/sppo/v1/optimizer_pb.js";
import { Code, RpcError } from "../../../lib/errors.js";
import { directoryManifestSync } from "../../../lib/weights/manifest.js";
import { listCheckpoints } from "../../../services/optimizer/checkpoint.js";
import { Trainer } from "../../../services/optimizer/trainer.js";
import { configAt, endMsg, makeBaseModel, makeExamples, rpcCode, startMsg } from "./fixtures.js";

const roots: string[] = [];
before(async () => {
  await tf.setBackend("cpu");
});
after(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

const OVERRIDES = { learningRate: 0.01, batchSize: 4, warmupRatio: 0 };
const hex = (c: string) => c.repeat(64);

/** IterationStart of `iteration` for run `runId` (fingerprint `fp`) on base `base` (this root's base by default). */
function startOf(runId: string, iteration: number, options: { fp?: string; base?: string } = {}): IterationStart {
  const msg = startMsg(4, {}, iteration);
  msg.run = create(RunIdentitySchema, { runId, fingerprint: options.fp ?? hex(runId === "A" ? "a" : "b"), baseSha256: options.base ?? "" });
  return msg;
}

/** Trains one iteration of `examples` for `start`'s run; returns the published version's hash. */
function iteration(t: Trainer, start: IterationStart, examples: TrainingExample[]): string {
  t.start(start);
  for (const ex of examples) t.addExample({ ...ex, iteration: start.iteration });
  const published = t.end(endMsg(start.iteration)).at(-1)?.payload;
  assert.ok(published?.case === "policyPublished");
  return published.value.sha256;
}

describe("runs in one trainer", () => {
  test("a new run starts from the base; a run that comes back continues bit-identically, its open iteration included", () => {
    const root = makeBaseModel();
    roots.push(root);
    const config = configAt(root, OVERRIDES);
    const examplesA = makeExamples(config.modelDir, { prompts: 4, k: 2, seed: 1 });
    const examplesB = makeExamples(config.modelDir, { prompts: 4, k: 2, seed: 2 });

    // References: A's two iterations and B's first, each on a trainer of its own.
    const refRoot = makeBaseModel();
    roots.push(refRoot);
    const refA = Trainer.open(configAt(refRoot, { ...OVERRIDES, checkpointDir: join(refRoot, "ca"), policyDir: join(refRoot, "pa") }));
    const a1 = iteration(refA, startOf("A", 1), examplesA);
    const a2 = iteration(refA, startOf("A", 2), examplesA);
    refA.dispose();
    const refB = Trainer.open(configAt(refRoot, { ...OVERRIDES, checkpointDir: join(refRoot, "cb"), policyDir: join(refRoot, "pb") }));
    const b1 = iteration(refB, startOf("B", 1), examplesB);
    refB.dispose();
    assert.notEqual(a1, b1);

    const t = Trainer.open(config);
    assert.equal(iteration(t, startOf("A", 1), examplesA), a1);
    // A's iteration 2 is left open halfway when run B comes: B is new, so it trains from the base.
    t.start(startOf("A", 2));
    for (const ex of examplesA.slice(0, 4)) t.addExample({ ...ex, iteration: 2 });
    assert.equal(iteration(t, startOf("B", 1), examplesB), b1, "run B trained from the base, not from A's policy");
    assert.equal(t.runId, "B");
    assert.deepEqual(t.listVersions().map((v) => [v.version, v.runId]), [[0, ""], [1, "B"]]);
    // A comes back and replays its iteration 2: it continues from the checkpoint written when B came.
    assert.equal(iteration(t, startOf("A", 2), examplesA), a2, "A's iteration 2 ended as if B had never come");
    assert.deepEqual(t.listVersions().map((v) => [v.version, v.runId, v.runFingerprint]), [[0, "", ""], [1, "A", hex("a")], [2, "A", hex("a")]]);
    t.dispose();

    // Each run's checkpoints and versions are in its own folders; current-run names the last one.
    const runs = join(config.checkpointDir, "runs");
    assert.ok(listCheckpoints(join(runs, "A")).length > 0 && listCheckpoints(join(runs, "B")).length > 0);
    assert.equal(listCheckpoints(config.checkpointDir).length, 0, "no anonymous checkpoints");
    assert.equal(readFileSync(join(config.checkpointDir, "current-run"), "utf8").trim(), "A");
    assert.equal(directoryManifestSync(join(config.policyDir, "runs", "B", "v1")).sha256, b1);
    assert.ok(existsSync(join(config.policyDir, "runs", "A", "v2")));

    // A restarted trainer resumes the run it last trained; B coming back finds its own state (iteration 1 done).
    const restarted = Trainer.open(config);
    assert.equal(restarted.runId, "A");
    assert.equal(restarted.currentIteration(), 2);
    restarted.start(startOf("B", 1)); // B's finished iteration replayed: acknowledged for B only
    assert.equal(restarted.runId, "B");
    const ack = restarted.end(endMsg(1));
    assert.deepEqual(ack.map((e) => e.payload.case), ["policyPublished"]);
    assert.equal((ack[0].payload.value as { sha256: string }).sha256, b1);
    restarted.dispose();
  });

  test("refused: a bad run id, another fingerprint under a known run id, another base", () => {
    const root = makeBaseModel();
    roots.push(root);
    const config = configAt(root, OVERRIDES);
    const examples = makeExamples(config.modelDir, { prompts: 4, k: 2 });
    const t = Trainer.open(config);
    iteration(t, startOf("A", 1), examples);
    assert.equal(rpcCode(() => t.start(startOf("../x", 1))), Code.INVALID_ARGUMENT);
    assert.equal(rpcCode(() => t.start(startOf("A", 2, { fp: "f00" }))), Code.INVALID_ARGUMENT);
    iteration(t, startOf("B", 1), examples);
    // A known run id with another configuration (its checkpoints say otherwise): refused, B stays.
    assert.throws(() => t.start(startOf("A", 2, { fp: hex("c") })), /start\.run: run A was started with other settings \(fingerprint aaaaaaaaaaaa… in its checkpoints, cccccccccccc… now\)/);
    assert.equal(t.runId, "B");
    assert.throws(
      () => t.start(startOf("C", 1, { base: hex("d") })),
      (err: unknown) =>
        err instanceof RpcError &&
        err.code === Code.FAILED_PRECONDITION &&
        /start\.run: run C \(its base policy, version 0 of its generator\) is on another base model \(sha256 dddddddddddd…\) than this optimizer's optimizer\.modelDir \S+ \(gpt2 with [\d,]+ parameters, sha256 [0-9a-f]{12}…\): give the optimizer and the generator the same base model/.test(err.message),
    );
    // The right base is accepted (and C starts fresh).
    t.start(startOf("C", 1, { base: directoryManifestSync(config.modelDir).sha256 }));
    assert.equal(t.runId, "C");
    t.dispose();
  });

  test("at start-up a checkpoint on another base model is refused, or left unused with baseMismatch: fresh", () => {
    const root = makeBaseModel(7);
    roots.push(root);
    const config = configAt(root, OVERRIDES);
    const t = Trainer.open(config);
    iteration(t, startOf("A", 1), makeExamples(config.modelDir, { prompts: 4, k: 2 }));
    t.dispose();
    const other = makeBaseModel(8); // another base model
    roots.push(other);
    const moved = { modelDir: join(other, "base") };
    assert.throws(
      () => Trainer.open(configAt(root, { ...OVERRIDES, ...moved })),
      /optimizer\.checkpointDir: checkpoint \S+runs\/A\/ckpt-i000001-s\d+ is on another base model \(gpt2 with [\d,]+ parameters, sha256 [0-9a-f]{12}…\) than this optimizer's optimizer\.modelDir \S+ \(sha256 [0-9a-f]{12}…\): point optimizer\.modelDir at that model, give this optimizer another checkpointDir, or set optimizer\.baseMismatch: fresh/,
    );
    const fresh = Trainer.open(configAt(root, { ...OVERRIDES, ...moved, baseMismatch: "fresh" }));
    assert.equal(fresh.runId, "");
    assert.equal(fresh.currentIteration(), 0);
    assert.equal(fresh.listVersions()[0].sha256, directoryManifestSync(moved.modelDir).sha256);
    // Run A coming back to this optimizer is on the old base: its checkpoints are left unused too, it starts fresh.
    fresh.start(startOf("A", 1));
    assert.equal(fresh.currentIteration(), 1);
    assert.equal(fresh.listVersions().length, 1);
    fresh.dispose();
  });
});
