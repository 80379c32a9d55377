/**
 * The loop's fault handling, part by part: the scored-set journal (what a stop leaves behind), the Train stream
 * re-opened and replayed after it broke, and the run directory's state (refusing to overwrite an unfinished run, or
 * to resume under a changed config). The request multiplexer's faults are in test/lib/grpc/multiplexer.test.ts;
 * whole runs with killed or frozen processes are in test/faults/.
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
import { TelemetryEventSchema } from "../../gen/sppo/v1/telemetry_pb.js";
import { configSchema } from "../../lib/config/schema.js";
import { Code, RpcError } from "../../lib/errors.js";
import { fileJournal, memoryJournal } from "../../pipeline/journal.js";
import { checkSameSettings, prepareFreshOutDir, readRunState, writeRunState } from "../../pipeline/run-state.js";
import { trainPolicy } from "../../pipeline/train-policy.js";
import type { ScoredSet } from "../../pipeline/types.js";

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

