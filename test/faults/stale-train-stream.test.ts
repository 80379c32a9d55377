/**
 * A Train stream whose connection was cut without the optimizer noticing (a stale stream, as when keepalive acks go
 * unread and the client drops every connection at once): the loop's re-opens are refused with ABORTED until the
 * optimizer lets go of the old stream. They must wait (back off) rather than use up the re-open budget in a few
 * milliseconds; once the optimizer notices, the re-opened stream replays the iteration and the weights equal an
 * uninterrupted run's.
 * A real optimizer (tiny GPT-2, in this thread) on 127.0.0.1:0, reached through a loopback TCP proxy that can cut
 * its client side while it holds the optimizer's side open.
 * Run: node --import tsx --test test/faults/stale-train-stream.test.ts
 */
import assert from "node:assert/strict";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as tf from "@tensorflow/tfjs";
import { lastValueFrom, Subject, tap, toArray } from "rxjs";
import { CandidateSchema } from "../../gen/sppo/v1/generator_pb.js";
import { Optimizer, type TrainRequest, TrainRequestSchema, type TrainResponse } from "../../gen/sppo/v1/optimizer_pb.js";
import { serverConfigSchema } from "../../lib/config/server.js";
import { Code, RpcError } from "../../lib/errors.js";
import { createClient } from "../../lib/grpc/client.js";
import { mount, serve } from "../../lib/grpc/serve.js";
import { trainingExamples, trainPolicy } from "../../pipeline/train-policy.js";
import type { ScoredSet } from "../../pipeline/types.js";
import { createOptimizerService, optimizerImplementation } from "../../services/optimizer/server.js";
import { inProcessTrainer, type TrainerApi } from "../../services/optimizer/trainer-api.js";
import { configAt, endMsg, makeBaseModel, makeExamples, startMsg } from "../services/optimizer/fixtures.js";

const roots: string[] = [];
after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});
before(async () => {
  await tf.setBackend("cpu");
});

/** A TCP proxy to `port`; `cut()` closes the client side of every open connection but keeps the server side open. */
async function cuttingProxy(port: number) {
  const pairs: { client: Socket; upstream: Socket; held: boolean }[] = [];
  const server = createServer((client) => {
    const upstream = connect(port, "127.0.0.1");
    const pair = { client, upstream, held: false };
    pairs.push(pair);
    client.on("data", (data) => upstream.write(data));
    // A held pair's server side is read and its bytes dropped: the optimizer sees a live, silent peer.
    upstream.on("data", (data) => {
      if (!pair.held) client.write(data);
    });
    client.on("error", () => {});
    upstream.on("error", () => {});
    client.on("close", () => {
      if (!pair.held) upstream.destroy();
    });
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    cut() {
      for (const pair of pairs.filter((p) => !p.client.destroyed)) {
        pair.held = true;
        pair.client.destroy();
      }
    },
    /** The optimizer's side of the cut connections closes: now it notices. */
    release() {
      for (const pair of pairs.filter((p) => p.held)) pair.upstream.destroy();
    },
    close() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      server.close();
    },
  };
}

/** The examples of `prompts` prompts (K = 2) as the scored sets the loop would hand to trainPolicy. */
function scoredSets(modelDir: string, prompts: number): ScoredSet[] {
  const examples = makeExamples(modelDir, { prompts, k: 2 });
  return Array.from({ length: prompts }, (_, p) => {
    const group = examples.filter((e) => e.promptId === `p${p}`);
    return {
      prompt: { id: `p${p}`, prompt: `prompt ${p}` },
      promptTokenIds: group[0].promptTokenIds,
      candidates: group.map((e) => create(CandidateSchema, { index: e.sampleIndex, tokenIds: e.responseTokenIds, text: "", logprob: e.referenceLogprob })),
      policyVersion: 0,
      matrix: [],
      winRates: group.map((e) => e.winRate),
      referenceLogprobs: group.map((e) => e.referenceLogprob),
    };
  });
}

async function startOptimizer() {
  const root = makeBaseModel();
  roots.push(root);
  const config = { optimizer: configAt(root, { backend: "cpu", learningRate: 0.01, batchSize: 2, warmupRatio: 0 }), server: { maxMessageBytes: 1 << 20 } };
  const service = await createOptimizerService(config);
  const running = await serve({
    name: "optimizer-stale-stream-test",
    services: [mount(Optimizer, service.implementation)],
    config: { ...serverConfigSchema.parse({ host: "127.0.0.1", port: 0, metricsPort: -1, drainDelayMs: 0 }), port: 0 },
  });
  return {
    modelDir: config.optimizer.modelDir,
    port: running.port,
    async close() {
      await running.shutdown(1_000);
      await service.close();
    },
  };
}

describe("a Train stream left stale by a cut connection", () => {
  it("the loop backs off while the optimizer still holds it, then replays the iteration to the same weights", async () => {
    const PROMPTS = 4;
    // The reference: the same examples on one uninterrupted stream of a fresh optimizer.
    const reference = await startOptimizer();
    const sets = scoredSets(reference.modelDir, PROMPTS);
    let referenceSha = "";
    const direct = createClient(Optimizer, `127.0.0.1:${reference.port}`, {});
    try {
      const requests: TrainRequest[] = [
        create(TrainRequestSchema, { kind: { case: "start", value: startMsg(PROMPTS) } }),
        ...sets.flatMap((set) => trainingExamples(set, 1)).map((example) => create(TrainRequestSchema, { kind: { case: "example", value: example } })),
        create(TrainRequestSchema, { kind: { case: "end", value: endMsg() } }),
      ];
      for await (const response of direct.train(requests)) {
        if (response.event?.payload.case === "policyPublished") referenceSha = response.event.payload.value.sha256;
      }
    } finally {
      direct.close();
      await reference.close();
    }
    assert.match(referenceSha, /^[0-9a-f]{64}$/);

    const optimizer = await startOptimizer();
    const proxy = await cuttingProxy(optimizer.port);
    const client = createClient(Optimizer, `127.0.0.1:${proxy.port}`, {});
    let refusals = 0;
    // Counts the re-opens refused because the old stream is still held; after the third, the optimizer notices.
    const train = (requests: AsyncIterable<TrainRequest>): AsyncIterable<TrainResponse> =>
      (async function* () {
        try {
          yield* client.train(requests);
        } catch (err) {
          if (err instanceof RpcError && err.code === Code.ABORTED && ++refusals === 3) proxy.release();
          throw err;
        }
      })();
    try {
      const source = new Subject<ScoredSet>();
      let cutDone = false;
      const done = lastValueFrom(
        source.pipe(
          trainPolicy({ train, start: startMsg(PROMPTS), ready: (ms) => client.waitForReady(ms), maxReconnects: 2 }),
          tap((event) => {
            // The first step was trained on the first stream: cut it, then send the rest of the iteration.
            if (event.payload.case === "trainStep" && refusals === 0 && !cutDone) {
              cutDone = true;
              proxy.cut();
              for (const set of sets.slice(1)) source.next(set);
              source.complete();
            }
          }),
          toArray(),
        ),
      );
      source.next(sets[0]);
      const events = await done;
      assert.ok(cutDone, "the first stream was cut after its first step");
      assert.ok(refusals >= 3, `re-opens refused while the old stream was held: ${refusals}`);
      const published = events.filter((e) => e.payload.case === "policyPublished");
      assert.equal(published.length, 1);
      assert.equal(published[0].payload.case === "policyPublished" && published[0].payload.value.sha256, referenceSha, "the same weights as an uninterrupted run");
    } finally {
      client.close();
      proxy.close();
      await optimizer.close();
    }
  });

  it("a stream opened while the cancelled one finishes its request waits for it instead of being refused", async () => {
    const root = makeBaseModel();
    roots.push(root);
    const config = { optimizer: configAt(root, { backend: "cpu", learningRate: 0.01, batchSize: 2, warmupRatio: 0 }), server: { maxMessageBytes: 1 << 20 } };
    const service = await createOptimizerService(config);
    const api = inProcessTrainer(service.trainer);
    // The first example is held inside the trainer until `release`, as a long train step would be.
    let reached = () => {};
    const atGate = new Promise<void>((resolve) => (reached = resolve));
    let release = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    let gated = false;
    const trainer: TrainerApi = {
      ...api,
      handle: async (request) => {
        if (request.kind.case === "example" && !gated) {
          gated = true;
          reached();
          await gate;
        }
        return api.handle(request);
      },
    };
    const implementation = optimizerImplementation(trainer, config);
    const signals: AbortSignal[] = [];
    const running = await serve({
      name: "optimizer-stale-stream-test",
      services: [
        mount(Optimizer, {
          ...implementation,
          train: (requests, context) => {
            signals.push(context.signal);
            return implementation.train(requests, context);
          },
        }),
      ],
      config: { ...serverConfigSchema.parse({ host: "127.0.0.1", port: 0, metricsPort: -1, drainDelayMs: 0 }), port: 0 },
    });
    const target = `127.0.0.1:${running.port}`;
    const first = createClient(Optimizer, target, {});
    const second = createClient(Optimizer, target, {});
    let hold = () => {};
    const held = new Promise<void>((resolve) => (hold = resolve));
    try {
      const sets = scoredSets(config.optimizer.modelDir, 2);
      const examples = sets.flatMap((set) => trainingExamples(set, 1)).map((example) => create(TrainRequestSchema, { kind: { case: "example", value: example } }));
      const start = create(TrainRequestSchema, { kind: { case: "start", value: startMsg(2) } });
      const cancel = new AbortController();
      async function* firstRequests(): AsyncGenerator<TrainRequest> {
        yield start;
        yield examples[0];
        await held;
      }
      const firstDone = (async () => {
        for await (const _ of first.train(firstRequests(), { signal: cancel.signal })) {
          // nothing is answered before the gate opens
        }
      })().catch((err: unknown) => err);
      await atGate;
      cancel.abort();
      // The optimizer has seen the cancellation, while its handler still waits for the trainer.
      await new Promise<void>((resolve) => (signals[0].aborted ? resolve() : signals[0].addEventListener("abort", () => resolve(), { once: true })));
      const cases: string[] = [];
      const secondDone = (async () => {
        for await (const response of second.train([start, ...examples, create(TrainRequestSchema, { kind: { case: "end", value: endMsg() } })])) {
          cases.push(response.event?.payload.case ?? "");
        }
      })();
      // The second stream has reached the handler (and is waiting, not refused) before the first request ends.
      while (signals.length < 2) await new Promise((resolve) => setImmediate(resolve));
      release();
      await secondDone;
      assert.equal(cases.at(-1), "policyPublished");
      assert.ok((await firstDone) instanceof RpcError, "the first stream was cancelled");
    } finally {
      hold();
      release();
      first.close();
      second.close();
      await running.shutdown(1_000);
      await service.close();
    }
  });
});
