/**
 * The loop's fault handling, part by part: the scored-set journal (what a stop leaves behind), the Train stream
 * re-opened and replayed after it broke, the multiplexer spreading streams over two real replicas and re-sending a
 * dead replica's requests on the other, and the run directory's state (refusing to overwrite an unfinished run, or
 * to resume under a changed config). Whole runs with killed processes are in test/faults/.
 * Run: node --import tsx --test test/pipeline/resilience.test.ts
 */
import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { from, lastValueFrom, toArray } from "rxjs";
import { CandidateSchema } from "../../gen/sppo/v1/generator_pb.js";
import { IterationStartSchema, type TrainingExample, TrainingExampleSchema, type TrainRequest, type TrainResponse } from "../../gen/sppo/v1/optimizer_pb.js";
import { type CompareRequest, CompareRequestSchema, PreferenceOracle } from "../../gen/sppo/v1/oracle_pb.js";
import { TelemetryEventSchema } from "../../gen/sppo/v1/telemetry_pb.js";
import { configSchema } from "../../lib/config/schema.js";
import { Code, RpcError } from "../../lib/errors.js";
import { createClient } from "../../lib/grpc/client.js";
import { mount, type RunningServer } from "../../lib/grpc/serve.js";
import { fileJournal, memoryJournal } from "../../pipeline/journal.js";
import { createMultiplexer } from "../../pipeline/multiplexer.js";
import { checkSameSettings, prepareFreshOutDir, readRunState, writeRunState } from "../../pipeline/run-state.js";
import { trainPolicy } from "../../pipeline/train-policy.js";
import type { ScoredSet } from "../../pipeline/types.js";
import { serveForTest } from "../lib/grpc/harness.js";

const dir = mkdtempSync(join(tmpdir(), "sppo-resilience-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function example(promptId: string, sampleIndex: number, groupSize = 2, iteration = 1): TrainingExample {
  return create(TrainingExampleSchema, { promptId, sampleIndex, groupSize, iteration, promptTokenIds: [1], responseTokenIds: [2 + sampleIndex], winRate: 0.5, referenceLogprob: -1 });
}

function scored(id: string): ScoredSet {
  return {
    prompt: { id, prompt: `prompt ${id}` },
    promptTokenIds: [1, 2],
    candidates: [0, 1].map((i) => create(CandidateSchema, { index: i, tokenIds: [10 + i], text: `c${i}`, logprob: -1 - i })),
    policyVersion: 0,
    matrix: [
      [0.5, 0.7],
      [0.3, 0.5],
    ],
    winRates: [0.6, 0.4],
    referenceLogprobs: [-1, -2],
  };
}

describe("scored-set journal", () => {
  it("replays what was appended, in order, and knows the scored prompts after reopening", () => {
    const path = join(dir, "j1", "iteration-1.jsonl");
    const journal = fileJournal(path, 1);
    journal.append([example("a", 0), example("a", 1)]);
    journal.append([example("b", 0), example("b", 1)]);
    assert.deepEqual([...journal.replay()].map((e) => `${e.promptId}${e.sampleIndex}`), ["a0", "a1", "b0", "b1"]);
    const reopened = fileJournal(path, 1);
    assert.deepEqual([...reopened.scoredPrompts].sort(), ["a", "b"]);
  });

  it("cuts a torn last line and a partly written group, so the prompt is sampled again", () => {
    const path = join(dir, "j2", "iteration-1.jsonl");
    fileJournal(path, 1).append([example("a", 0), example("a", 1)]);
    const whole = readFileSync(path, "utf8");
    // A stop in the middle of group b: one whole line of it, then half of the next.
    const b0 = `${JSON.stringify({ promptId: "b", sampleIndex: 0, groupSize: 2, iteration: 1 })}\n`;
    appendFileSync(path, `${b0}{"promptId":"b","sampl`);
    const journal = fileJournal(path, 1);
    assert.deepEqual([...journal.scoredPrompts], ["a"]);
    assert.equal(readFileSync(path, "utf8"), whole, "the file is cut back to the last whole group");
    journal.append([example("b", 0), example("b", 1)]);
    assert.deepEqual([...fileJournal(path, 1).scoredPrompts].sort(), ["a", "b"]);
  });

  it("names the file and line of a damaged line in the middle, and of another iteration's example", () => {
    const path = join(dir, "j3", "iteration-2.jsonl");
    fileJournal(path, 2).append([example("a", 0, 2, 2), example("a", 1, 2, 2)]);
    const lines = readFileSync(path, "utf8").split("\n");
    writeFileSync(path, [lines[0], "{not json", lines[1], ""].join("\n"));
    assert.throws(() => fileJournal(path, 2), (err: Error) => err.message.startsWith(`${path}:2: not a TrainingExample`));
    writeFileSync(path, `${lines[0]}\n`);
    assert.throws(() => fileJournal(path, 3), (err: Error) => err.message.includes(`${path}:1: example of iteration 2 in the journal of iteration 3`));
  });
});

describe("trainPolicy after a broken Train stream", () => {
  /** An optimizer stand-in that records each stream's requests; the first stream breaks after `breakAfter` examples. */
  function flakyOptimizer(breakAfter: number) {
    const streams: string[][] = [];
    let ready = 0;
    const train = (requests: AsyncIterable<TrainRequest>): AsyncIterable<TrainResponse> =>
      (async function* () {
        const seen: string[] = [];
        streams.push(seen);
        const first = streams.length === 1;
        for await (const request of requests) {
          const k = request.kind;
          seen.push(k.case === "example" ? `${k.value.promptId}${k.value.sampleIndex}` : String(k.case));
          if (first && seen.length - 1 === breakAfter) throw new RpcError(Code.UNAVAILABLE, "connection dropped");
          if (k.case === "end") {
            yield { $typeName: "sppo.v1.TrainResponse", event: create(TelemetryEventSchema, { payload: { case: "policyPublished", value: { version: 1, sha256: "x" } } }) } as TrainResponse;
          }
        }
      })();
    return { train, streams, ready: async () => void ready++, readyCalls: () => ready };
  }

  it("re-opens the stream once the optimizer is back and replays start, every journaled example, then the rest", async () => {
    const optimizer = flakyOptimizer(3);
    const accepted: string[] = [];
    const events = await lastValueFrom(
      from(["a", "b", "c", "d"].map(scored)).pipe(
        trainPolicy({
          train: optimizer.train,
          start: create(IterationStartSchema, { iteration: 1, totalPrompts: 4, baseVersion: 0 }),
          journal: memoryJournal(),
          bufferedExamples: 2,
          ready: optimizer.ready,
          accepted: (set) => accepted.push(set.prompt.id),
        }),
        toArray(),
      ),
    );
    assert.deepEqual(events.map((e) => e.payload.case), ["policyPublished"]);
    assert.equal(optimizer.streams.length, 2);
    assert.equal(optimizer.readyCalls(), 1);
    assert.deepEqual(optimizer.streams[0], ["start", "a0", "a1", "b0"], "the first stream broke after 3 examples");
    assert.deepEqual(optimizer.streams[1], ["start", "a0", "a1", "b0", "b1", "c0", "c1", "d0", "d1", "end"], "the second has all of them, in order, once");
    assert.deepEqual(accepted, ["a", "b", "c", "d"]);
  });

  it("ends the run on a refusal (not a broken stream), and without `ready`", async () => {
    const refusing = (requests: AsyncIterable<TrainRequest>): AsyncIterable<TrainResponse> =>
      (async function* () {
        for await (const _ of requests) throw new RpcError(Code.FAILED_PRECONDITION, "start.iteration must be 2");
        yield* [];
      })();
    const run = (train: typeof refusing, ready?: () => Promise<void>) =>
      lastValueFrom(from([scored("a")]).pipe(trainPolicy({ train, start: create(IterationStartSchema, { iteration: 1, totalPrompts: 1 }), ready })));
    await assert.rejects(run(refusing, async () => {}), (err: unknown) => err instanceof RpcError && err.code === Code.FAILED_PRECONDITION);
    await assert.rejects(run(flakyOptimizer(1).train), (err: unknown) => err instanceof RpcError && err.code === Code.UNAVAILABLE);
  });

  it("treats a stream that ends before PolicyPublished as broken", async () => {
    let opened = 0;
    const train = (requests: AsyncIterable<TrainRequest>): AsyncIterable<TrainResponse> =>
      (async function* () {
        opened++;
        for await (const request of requests) {
          if (opened === 1) return; // a clean end, nothing published: the optimizer shut down
          if (request.kind.case === "end") yield { $typeName: "sppo.v1.TrainResponse", event: create(TelemetryEventSchema, { payload: { case: "policyPublished", value: { version: 1 } } }) } as TrainResponse;
        }
      })();
    const events = await lastValueFrom(
      from([scored("a")]).pipe(trainPolicy({ train, start: create(IterationStartSchema, { iteration: 1, totalPrompts: 1 }), ready: async () => {} }), toArray()),
    );
    assert.equal(opened, 2);
    assert.deepEqual(events.map((e) => e.payload.case), ["policyPublished"]);
  });
});

describe("multiplexer over two replicas", () => {
  const servers: RunningServer[] = [];
  after(async () => Promise.all(servers.map((s) => s.shutdown(0))));

  /** An oracle replica that holds every request until `release`, then answers; `seen` counts what it received. */
  function replica(name: string, release: Promise<void>, seen: Map<string, string[]>, described: Set<string>) {
    return mount(PreferenceOracle, {
      async describe() {
        described.add(name);
        return {};
      },
      async *compare(requests) {
        const held: CompareRequest[] = [];
        for await (const r of requests) {
          seen.set(r.requestId, [...(seen.get(r.requestId) ?? []), name]);
          held.push(r);
          if (held.length >= 2) break;
        }
        await release;
        for (const r of held) yield { requestId: r.requestId, k: 2, probabilities: [0.5, 0.5, 0.5, 0.5], truncatedTexts: name === "a" ? 1 : 2 };
      },
    });
  }

  it("spreads its streams over the replicas and re-sends a dead replica's requests on the other, each answered once", async () => {
    let releaseB!: () => void;
    const seen = new Map<string, string[]>();
    const described = new Set<string>();
    const a = await serveForTest([replica("a", new Promise(() => {}), seen, described)]); // never answers: it is killed
    const b = await serveForTest([replica("b", new Promise<void>((r) => (releaseB = r)), seen, described)]);
    servers.push(b);
    const client = createClient(PreferenceOracle, `ipv4:127.0.0.1:${a.port},127.0.0.1:${b.port}`, { maxAttempts: 1 });
    // Until both replicas are connected round_robin uses the ready one only; unary calls alternate once both are.
    while (described.size < 2) await client.describe({});
    const mux = createMultiplexer((r) => client.compare(r), { name: "oracle", streams: 2, ready: (ms) => client.waitForReady(ms) });
    try {
      const ids = ["p0", "p1", "p2", "p3"];
      const answers = ids.map((id) => mux.request(create(CompareRequestSchema, { requestId: id, candidates: ["x", "y"] })));
      // Both replicas hold two requests each.
      while ([...seen.values()].length < 4) await new Promise((r) => setTimeout(r, 10));
      const onA = ids.filter((id) => seen.get(id)?.[0] === "a");
      assert.equal(onA.length, 2, `round_robin put one stream on each replica: ${JSON.stringify([...seen])}`);
      await a.shutdown(0); // the replica dies with two requests in flight
      releaseB();
      const responses = await Promise.all(answers);
      assert.deepEqual(responses.map((r) => r.requestId), ids);
      for (const id of onA) assert.deepEqual(seen.get(id), ["a", "b"], `${id} re-sent to b once`);
      for (const r of responses) assert.equal(r.truncatedTexts, 2, "every answer came from the live replica");
    } finally {
      mux.close();
      client.close();
    }
  });
});

describe("multiplexer stream rotation", () => {
  it("retires a stream after requestsPerStream requests; the next request opens a new one and nothing is lost", async () => {
    let opened = 0;
    const open = (requests: AsyncIterable<{ requestId: string }>) =>
      (async function* () {
        opened++;
        for await (const r of requests) yield { requestId: r.requestId };
      })();
    const mux = createMultiplexer(open, { name: "echo", streams: 1, requestsPerStream: 2 });
    const ids = ["r0", "r1", "r2", "r3", "r4"];
    const answers = await Promise.all(ids.map((requestId) => mux.request({ requestId })));
    mux.close();
    assert.deepEqual(answers.map((a) => a.requestId), ids);
    assert.equal(opened, 3, "5 requests at 2 per stream");
  });
});

describe("multiplexer message limit", () => {
  it("refuses a request over the limit as bad input before sending it; the stream goes on with the others", async () => {
    const sent: string[] = [];
    const open = (requests: AsyncIterable<{ requestId: string; body: string }>) =>
      (async function* () {
        for await (const r of requests) {
          sent.push(r.requestId);
          yield { requestId: r.requestId };
        }
      })();
    const mux = createMultiplexer(open, { name: "oracle", sizeOf: (r) => r.body.length, maxMessageBytes: 10 });
    const big = mux.request({ requestId: "big", body: "x".repeat(11) });
    const small = mux.request({ requestId: "small", body: "x".repeat(10) });
    await assert.rejects(big, (err: unknown) => err instanceof RpcError && err.code === Code.INVALID_ARGUMENT && /request big is 11 bytes, over the message limit of 10/.test(err.message));
    assert.equal((await small).requestId, "small");
    mux.close();
    assert.deepEqual(sent, ["small"]);
  });
});

describe("run directory state", () => {
  const config = configSchema.parse({ pipeline: { iterations: 2 } });

  it("refuses to start afresh over an unfinished run, and replaces a finished one", () => {
    const out = join(dir, "run1");
    prepareFreshOutDir(out);
    writeRunState(out, { config: "/x.yaml" }, config);
    writeFileSync(join(out, "summary.json"), JSON.stringify({ iterations: [{ iteration: 1 }] }));
    assert.throws(() => prepareFreshOutDir(out), /holds an unfinished run \(1 of 2 iterations done\): continue it with `sppo run --resume/);
    writeFileSync(join(out, "summary.json"), JSON.stringify({ iterations: [{ iteration: 1 }, { iteration: 2 }] }));
    prepareFreshOutDir(out);
    assert.throws(() => readRunState(out), /no run.json there/);
  });

  it("refuses to resume under changed settings and names each, but not for operational ones", () => {
    const out = join(dir, "run2");
    prepareFreshOutDir(out);
    writeRunState(out, { config: "/x.yaml" }, config);
    const state = readRunState(out);
    checkSameSettings(state, configSchema.parse({ pipeline: { iterations: 2, telemetryPort: 0, generateConcurrency: 1 }, optimizer: { backend: "cpu" } }), out);
    assert.throws(
      () => checkSameSettings(state, configSchema.parse({ pipeline: { iterations: 2, seed: 7 }, optimizer: { learningRate: 1e-3 }, oracle: { backend: "synthetic-adjectives" } }), out),
      (err: Error) =>
        err.message.includes("pipeline.seed: 1 → 7") && err.message.includes("optimizer.learningRate: 5e-7 → 0.001") && err.message.includes('oracle.backend: "pairwise-onnx" → "synthetic-adjectives"'),
    );
    checkSameSettings(state, configSchema.parse({ pipeline: { iterations: 2 }, oracle: { maxQueuedRequests: 8, runInWorker: false } }), out);
    // A run.json written before a setting existed: the run had its default.
    const older = { ...state, settings: { ...state.settings, oracle: { backend: "pairwise-onnx", modelDir: "assets/oracle", syntheticStrength: 2 } } };
    checkSameSettings(older, configSchema.parse({ pipeline: { iterations: 2 } }), out);
    assert.throws(
      () => checkSameSettings(older, configSchema.parse({ pipeline: { iterations: 2 }, oracle: { syntheticCycleMargins: [1, 2, 1] } }), out),
      /oracle\.syntheticCycleMargins: \[1,1,1\] → \[1,2,1\]/,
    );
  });
});

