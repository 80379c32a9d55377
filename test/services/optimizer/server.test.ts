/**
 * sppo.v1.Optimizer over real gRPC on 127.0.0.1:0 with a tiny GPT-2 (cpu backend): a Train stream streams TrainSteps
 * and a PolicyPublished, the published version is pulled with GetWeights (lib/weights, verified) and equals the
 * trained weights, checkpoints and versions are listed, and misuse gets the right status.
 * Run: node --import tsx --test test/services/optimizer/server.test.ts
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as tf from "@tensorflow/tfjs";
import { Optimizer, type TrainRequest, TrainRequestSchema } from "../../../gen/sppo/v1/optimizer_pb.js";
import type { TelemetryEvent } from "../../../gen/sppo/v1/telemetry_pb.js";
import { serverConfigSchema } from "../../../lib/config/server.js";
import { Code, RpcError } from "../../../lib/errors.js";
import { createClient } from "../../../lib/grpc/client.js";
import { mount, serve } from "../../../lib/grpc/serve.js";
import { pullWeights } from "../../../lib/weights/index.js";
import { loadModel } from "../../../models/index.js";
import { createOptimizerService } from "../../../services/optimizer/server.js";
import { configAt, endMsg, makeBaseModel, makeExamples, maxAbsDiff, snapshotParams, startMsg } from "./fixtures.js";

const root = makeBaseModel();
const workerRoot = makeBaseModel(); // the same tiny policy (same seed), for the worker-thread run
after(() => rmSync(root, { recursive: true, force: true }));
after(() => rmSync(workerRoot, { recursive: true, force: true }));
/** Version 1's checksum from the in-thread run, which the worker-thread run must reproduce. */
let inThreadSha = "";
before(async () => {
  await tf.setBackend("cpu");
});

const requestsFor = (examples: ReturnType<typeof makeExamples>, prompts: number): TrainRequest[] => [
  create(TrainRequestSchema, { kind: { case: "start", value: startMsg(prompts) } }),
  ...examples.map((ex) => create(TrainRequestSchema, { kind: { case: "example", value: ex } })),
  create(TrainRequestSchema, { kind: { case: "end", value: endMsg() } }),
];

/** The service on a loopback server named `name` (metrics off, no drain delay), its address and a client. */
async function serveOptimizer(name: string, service: Awaited<ReturnType<typeof createOptimizerService>>) {
  const running = await serve({
    name,
    services: [mount(Optimizer, service.implementation)],
    config: { ...serverConfigSchema.parse({ host: "127.0.0.1", port: 0, metricsPort: -1, drainDelayMs: 0 }), port: 0 },
  });
  const target = `127.0.0.1:${running.port}`;
  return { running, target, client: createClient(Optimizer, target, {}) };
}

async function expectCode(promise: Promise<unknown>, code: Code): Promise<void> {
  await assert.rejects(promise, (err: unknown) => err instanceof RpcError && err.code === code);
}

describe("Optimizer service", () => {
  test("Train, GetWeights, checkpoints and versions", async () => {
    const config = { optimizer: configAt(root, { backend: "cpu", learningRate: 0.01, batchSize: 4, warmupRatio: 0 }), server: { maxMessageBytes: 1 << 20 } };
    const service = await createOptimizerService(config);
    const { running, target, client } = await serveOptimizer("optimizer-test", service);
    try {
      const examples = makeExamples(config.optimizer.modelDir, { prompts: 6, k: 3 });
      const events: TelemetryEvent[] = [];
      for await (const response of client.train(requestsFor(examples, 6))) events.push(response.event!);
      const cases = events.map((e) => e.payload.case);
      assert.deepEqual(cases, ["trainStep", "trainStep", "trainStep", "policyPublished"], "6 prompts × 2 responses in steps of 4");
      assert.ok(events.every((e) => e.source === "optimizer" && e.iteration === 1 && e.time !== undefined));
      const published = events[3].payload.value as { version: number; sha256: string };
      assert.equal(published.version, 1);
      inThreadSha = published.sha256;

      const { versions } = await client.listPolicyVersions({});
      assert.deepEqual(versions.map((v) => v.version), [0, 1]);
      assert.equal(versions[1].sha256, published.sha256);
      assert.equal(versions[1].family, "gpt2");
      assert.ok(versions[1].parameters > 0n);

      // Pull version 1 in 1 KiB chunks (many chunks per file), verified by lib/weights, and compare the weights.
      const pulled = await pullWeights({ target, version: 1, destination: join(root, "pulled", "v1"), chunkBytes: 1024 });
      assert.equal(pulled.policy.sha256, published.sha256);
      const { model } = loadModel(pulled.dir);
      assert.equal(maxAbsDiff(snapshotParams(model.params), snapshotParams(service.trainer.policy.params)), 0);
      model.dispose();
      const base = await pullWeights({ target, version: 0, destination: join(root, "pulled", "v0") });
      assert.equal(base.policy.sha256, versions[0].sha256);
      // An unknown version is NOT_FOUND. (Checked on the trainer: over lib/grpc's client, a server-streaming call
      // that fails before its first message currently ends the iterator cleanly and raises the status later as an
      // uncaught error — reported to lib/grpc's owner.)
      assert.throws(() => service.trainer.versionFiles(7), (err: unknown) => err instanceof RpcError && err.code === Code.NOT_FOUND);

      const { checkpoint } = await client.saveCheckpoint({});
      assert.ok(checkpoint && /^[0-9a-f]{64}$/.test(checkpoint.sha256));
      assert.equal(checkpoint.iteration, 1);
      assert.equal(checkpoint.step, 3n);
      assert.equal(checkpoint.policy?.version, 1);
      const { checkpoints } = await client.listCheckpoints({});
      assert.equal(checkpoints[0].name, checkpoint.name);
      assert.equal(checkpoints[0].policy?.sha256, published.sha256);

      // Iteration 1 again (a client that lost the stream replays it): acknowledged with the published version, no step.
      const replayed: string[] = [];
      for await (const response of client.train(requestsFor(examples, 6))) {
        replayed.push(response.event!.payload.case ?? "");
        if (response.event!.payload.case === "policyPublished") assert.equal(response.event!.payload.value.sha256, published.sha256);
      }
      assert.deepEqual(replayed, ["policyPublished"], "a replayed iteration is not trained twice");
      assert.equal((await client.saveCheckpoint({})).checkpoint?.step, 3n);
      // Iteration 3 before 2: refused.
      const skipAhead = async () => {
        for await (const _ of client.train([create(TrainRequestSchema, { kind: { case: "start", value: startMsg(6, {}, 3) } })])) {
          // drain
        }
      };
      await expectCode(skipAhead(), Code.FAILED_PRECONDITION);

      // One Train stream at a time.
      let release = () => {};
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      async function* idle(): AsyncGenerator<TrainRequest> {
        await held;
        yield* [] as TrainRequest[];
      }
      const first = (async () => {
        for await (const _ of client.train(idle())) {
          // nothing comes
        }
      })();
      // Wait until the first stream is being served before opening the second.
      while (running.inFlight() < 1) await new Promise((r) => setImmediate(r));
      await expectCode(
        (async () => {
          for await (const _ of client.train([])) {
            // nothing
          }
        })(),
        Code.ABORTED,
      );
      release();
      await first;
    } finally {
      client.close();
      await running.shutdown(1_000);
      await service.close();
    }
  });

  test("the same with the trainer in a worker thread: same weights, same statuses", async () => {
    const config = { optimizer: configAt(workerRoot, { backend: "cpu", learningRate: 0.01, batchSize: 4, warmupRatio: 0, trainInWorker: true }) };
    const service = await createOptimizerService(config);
    assert.throws(() => service.trainer, (err: unknown) => err instanceof RpcError && err.code === Code.FAILED_PRECONDITION);
    const { running, target, client } = await serveOptimizer("optimizer-worker-test", service);
    try {
      const examples = makeExamples(config.optimizer.modelDir, { prompts: 6, k: 3 });
      const cases: string[] = [];
      let sha = "";
      for await (const response of client.train(requestsFor(examples, 6))) {
        cases.push(response.event!.payload.case ?? "");
        if (response.event!.payload.case === "policyPublished") sha = response.event!.payload.value.sha256;
      }
      assert.deepEqual(cases, ["trainStep", "trainStep", "trainStep", "policyPublished"]);
      assert.ok(inThreadSha !== "", "the in-thread test ran first");
      assert.equal(sha, inThreadSha, "bit-identical to the in-thread run");
      const pulled = await pullWeights({ target, version: 1, destination: join(workerRoot, "pulled", "v1") });
      assert.equal(pulled.policy.sha256, sha);
      const { checkpoint } = await client.saveCheckpoint({});
      assert.equal(checkpoint?.policy?.version, 1);
      assert.equal((await client.listCheckpoints({})).checkpoints[0].name, checkpoint?.name);
      // Errors cross the thread boundary with their code.
      await expectCode(
        (async () => {
          for await (const _ of client.train([create(TrainRequestSchema, { kind: { case: "start", value: startMsg(6, {}, 3) } })])) {
            // drain
          }
        })(),
        Code.FAILED_PRECONDITION,
      );
    } finally {
      client.close();
      await running.shutdown(1_000);
      await service.close();
    }
  });
});
