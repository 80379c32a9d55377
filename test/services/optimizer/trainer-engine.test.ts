/**
 * The trainer over an engine that answers asynchronously (as worker-thread or onnxruntime engines do): the service's
 * path trains the same weights as the synchronous one, a checkpoint asked for mid-step waits for the step, and the
 * synchronous entry points refuse such an engine. Run: node --import tsx --test test/services/optimizer/trainer-engine.test.ts
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as tf from "@tensorflow/tfjs";
import { TrainRequestSchema } from "../../../gen/sppo/v1/optimizer_pb.js";
import { type TrainStep, tfjsStep } from "../../../models/index.js";
import { Trainer } from "../../../services/optimizer/trainer.js";
import { inProcessTrainer } from "../../../services/optimizer/trainer-api.js";
import { configAt, endMsg, makeBaseModel, makeExamples, startMsg } from "./fixtures.js";

/** tfjsStep answered on a later turn of the event loop, counting the steps in flight. */
function deferredEngine(): TrainStep & { inFlight: number } {
  const engine = {
    name: "deferred",
    synchronous: false,
    inFlight: 0,
    async step(...args: Parameters<TrainStep["step"]>) {
      engine.inFlight++;
      await new Promise<void>((resolve) => setImmediate(resolve));
      try {
        return tfjsStep.step(...args);
      } finally {
        engine.inFlight--;
      }
    },
    close() {},
  };
  return engine;
}

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

const OVERRIDES = { learningRate: 0.01, optimizer: "rmsprop", batchSize: 4, gradientAccumulation: 2, warmupRatio: 0, epochs: 2, eta: 4 };
const request = (kind: Parameters<typeof create<typeof TrainRequestSchema>>[1]) => create(TrainRequestSchema, kind);

describe("trainer with an asynchronous engine", () => {
  test("trains bit-identical weights through the service's path, and checkpoints wait for the step in flight", async () => {
    const syncRoot = newRoot();
    const examples = makeExamples(configAt(syncRoot).modelDir, { prompts: 4, k: 3, seed: 3 });
    const reference = Trainer.open(configAt(syncRoot, OVERRIDES));
    reference.start(startMsg(4));
    for (const ex of examples) reference.addExample(ex);
    reference.end(endMsg());
    const expectedSha = reference.listVersions()[1].sha256;
    reference.dispose();

    const engine = deferredEngine();
    const api = inProcessTrainer(Trainer.open(configAt(newRoot(), OVERRIDES), { engine }));
    try {
      await api.handle(request({ kind: { case: "start", value: startMsg(4) } }));
      // 4 prompts × 2 responses: the 2nd prompt's last example fills the first step (batch 4 = 2 pairs).
      for (const ex of examples.slice(0, 5)) assert.deepEqual(await api.handle(request({ kind: { case: "example", value: ex } })), []);
      const stepping = api.handle(request({ kind: { case: "example", value: examples[5] } }));
      const checkpoint = api.saveCheckpoint();
      const [events, saved] = await Promise.all([stepping, checkpoint]);
      assert.equal(events.length, 1);
      assert.equal(saved.step, 1, "the checkpoint was written after the step, not in the middle of it");
      for (const ex of examples.slice(6)) await api.handle(request({ kind: { case: "example", value: ex } }));
      const end = await api.handle(request({ kind: { case: "end", value: endMsg() } }));
      assert.equal(end.at(-1)?.payload.case, "policyPublished");
      assert.equal(engine.inFlight, 0);
      assert.equal((await api.listVersions())[1].sha256, expectedSha);
    } finally {
      await api.close();
    }
  });

  test("the synchronous entry points refuse it, naming handleAsync", () => {
    const root = newRoot();
    const examples = makeExamples(configAt(root).modelDir, { prompts: 1, k: 2 });
    const trainer = Trainer.open(configAt(root, { batchSize: 2 }), { engine: deferredEngine() });
    trainer.start(startMsg(1)); // no step: fine
    trainer.addExample(examples[0]);
    assert.throws(() => trainer.addExample(examples[1]), /the deferred train step is asynchronous: use handleAsync/);
    trainer.dispose();
  });
});
