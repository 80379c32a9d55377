/**
 * The loop's operators: marble tests with RxJS's TestScheduler for the pure stages, and the multiplexer over a real
 * bidi stream on loopback (responses out of order, per-request errors, re-send after a broken stream).
 * Run: node --import tsx --test test/pipeline/operators.test.ts
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { TestScheduler } from "rxjs/testing";
import { CandidateSchema } from "../../gen/sppo/v1/generator_pb.js";
import { type CompareRequest, CompareRequestSchema, PreferenceOracle } from "../../gen/sppo/v1/oracle_pb.js";
import { Code, RpcError } from "../../lib/errors.js";
import { createClient } from "../../lib/grpc/client.js";
import { mount, type RunningServer } from "../../lib/grpc/serve.js";
import { estimateWinRates } from "../../pipeline/estimate-win-rates.js";
import { createMultiplexer } from "../../pipeline/multiplexer.js";
import { trainingExamples } from "../../pipeline/train-policy.js";
import type { ComparedSet } from "../../pipeline/types.js";
import { serveForTest } from "../lib/grpc/harness.js";

function set(id: string, matrix: number[][]): ComparedSet {
  return {
    prompt: { id, prompt: `prompt ${id}` },
    promptTokenIds: [1, 2],
    candidates: matrix.map((_, i) => create(CandidateSchema, { index: i, tokenIds: [10 + i], text: `c${i}`, logprob: -1 - i })),
    policyVersion: 0,
    matrix,
  };
}

describe("pipeline operators", () => {
  it("estimateWinRates maps each set, keeping timing (marbles)", () => {
    const scheduler = new TestScheduler((actual, expected) => assert.deepEqual(actual, expected));
    // P: 0 beats 1 with 0.8; 1 beats 2 with 0.6; 0 beats 2 with 0.7.
    const P = [
      [0.5, 0.8, 0.7],
      [0.2, 0.5, 0.6],
      [0.3, 0.4, 0.5],
    ];
    scheduler.run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold("-a--b|", { a: set("a", P), b: set("b", [[0.5, 1], [0, 0.5]]) });
      const out = source.pipe(estimateWinRates("matrix"));
      expectObservable(out).toBe("-x--y|", {
        x: { ...set("a", P), winRates: [(0.5 + 0.8 + 0.7) / 3, (0.2 + 0.5 + 0.6) / 3, (0.3 + 0.4 + 0.5) / 3], referenceLogprobs: [-1, -2, -3] },
        y: { ...set("b", [[0.5, 1], [0, 0.5]]), winRates: [0.75, 0.25], referenceLogprobs: [-1, -2] },
      });
      expectSubscriptions(source.subscriptions).toBe("^----!");
    });
  });

  it("estimateWinRates in score_collapse mode works on the logits of P", () => {
    const scheduler = new TestScheduler((actual, expected) => assert.deepEqual(actual, expected));
    const sigma = (z: number) => 1 / (1 + Math.exp(-z));
    const P = [
      [0.5, sigma(2)],
      [sigma(-2), 0.5],
    ];
    scheduler.run(({ cold, expectObservable }) => {
      const out = cold("a|", { a: set("a", P) }).pipe(estimateWinRates("score_collapse"));
      // C_01 = 2, C_10 = −2: s_0 = (2 − (−2))/2 = 2, s_1 = −2; P̂_0 = (½ + σ(4))/2.
      const w0 = (0.5 + sigma(4)) / 2;
      const result: number[] = [];
      out.subscribe((s) => result.push(...s.winRates));
      expectObservable(cold("a|", { a: 1 })).toBe("a|", { a: 1 });
      scheduler.flush();
      assert.ok(Math.abs(result[0] - w0) < 1e-6 && Math.abs(result[1] - (1 - w0)) < 1e-6, `${result} vs ${w0}`);
    });
  });

  it("trainingExamples carries each sample's win rate and reference log-prob", () => {
    const s = { ...set("p", [[0.5, 0.9], [0.1, 0.5]]), winRates: [0.7, 0.3], referenceLogprobs: [-4, -5] };
    const examples = trainingExamples(s, 2);
    assert.equal(examples.length, 2);
    assert.deepEqual(
      examples.map((e) => [e.promptId, e.winRate, e.referenceLogprob, e.iteration, e.sampleIndex, e.groupSize, e.responseTokenIds]),
      [
        ["p", 0.7, -4, 2, 0, 2, [10]],
        ["p", 0.3, -5, 2, 1, 2, [11]],
      ],
    );
  });

  describe("multiplexer over a real bidi stream", () => {
    const servers: RunningServer[] = [];
    after(async () => Promise.all(servers.map((s) => s.shutdown(0))));
    const matrix2 = (r: CompareRequest) => ({ requestId: r.requestId, k: 2, probabilities: [0.5, 0.5, 0.5, 0.5] });

    it("matches out-of-order responses and turns per-request errors into rejections", async () => {
      const server = await serveForTest([
        mount(PreferenceOracle, {
          async describe() {
            return {};
          },
          async *compare(requests) {
            const held: CompareRequest[] = [];
            for await (const r of requests) {
              if (r.candidates.length < 2) {
                yield { requestId: r.requestId, error: { code: Code.INVALID_ARGUMENT, message: "need at least 2", field: "candidates" } };
                continue;
              }
              held.unshift(r);
              if (held.length === 3) for (const h of held.splice(0)) yield matrix2(h);
            }
          },
        }),
      ]);
      servers.push(server);
      const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
      const mux = createMultiplexer((r) => client.compare(r), { name: "oracle" });
      const results = await Promise.allSettled(
        ["a", "b", "bad", "c"].map((id) =>
          mux.request(create(CompareRequestSchema, { requestId: `${id}!`, prompt: "p", candidates: id === "bad" ? ["x"] : ["x", "y"] })),
        ),
      );
      const ok = results.filter((r) => r.status === "fulfilled").map((r) => (r as PromiseFulfilledResult<{ requestId: string }>).value.requestId);
      assert.deepEqual(ok.sort(), ["a!", "b!", "c!"]);
      const failed = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      assert.ok(failed.reason instanceof RpcError);
      assert.equal(failed.reason.code, Code.INVALID_ARGUMENT);
      assert.match(failed.reason.message, /request bad! \(field candidates\): need at least 2/);
      mux.close();
      client.close();
    });

    it("re-sends pending requests on a new stream when the stream breaks", async () => {
      let streams = 0;
      const server = await serveForTest([
        mount(PreferenceOracle, {
          async describe() {
            return {};
          },
          async *compare(requests) {
            streams++;
            const first = streams === 1;
            for await (const r of requests) {
              if (first) throw new RpcError(Code.UNAVAILABLE, "replica going away");
              yield matrix2(r);
            }
          },
        }),
      ]);
      servers.push(server);
      const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
      const mux = createMultiplexer((r) => client.compare(r), { name: "oracle" });
      const answers = await Promise.all(["x", "y"].map((id) => mux.request(create(CompareRequestSchema, { requestId: id, candidates: ["a", "b"] }))));
      assert.deepEqual(
        answers.map((a) => a.requestId),
        ["x", "y"],
      );
      assert.equal(streams, 2, "one broken stream, one that answered");
      mux.close();
      client.close();
    });

    it("asks again, with back-off, when the service answers RESOURCE_EXHAUSTED", async () => {
      const refusals = new Map<string, number>();
      const server = await serveForTest([
        mount(PreferenceOracle, {
          async describe() {
            return {};
          },
          async *compare(requests) {
            for await (const r of requests) {
              const seen = refusals.get(r.requestId) ?? 0;
              if (seen < 2) {
                refusals.set(r.requestId, seen + 1);
                yield { requestId: r.requestId, error: { code: Code.RESOURCE_EXHAUSTED, message: "full" } };
              } else yield matrix2(r);
            }
          },
        }),
      ]);
      servers.push(server);
      const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
      const mux = createMultiplexer((r) => client.compare(r), { name: "oracle", overloadBackoffMs: 5 });
      const answer = await mux.request(create(CompareRequestSchema, { requestId: "busy", candidates: ["a", "b"] }));
      assert.equal(answer.requestId, "busy");
      assert.equal(answer.error, undefined);
      assert.equal(refusals.get("busy"), 2, "refused twice, answered the third time");
      const quickToGiveUp = createMultiplexer((r) => client.compare(r), { name: "oracle", overloadBackoffMs: 1, maxOverloadRetries: 1 });
      await assert.rejects(quickToGiveUp.request(create(CompareRequestSchema, { requestId: "again", candidates: ["a", "b"] })), (err: RpcError) => err.code === Code.RESOURCE_EXHAUSTED);
      mux.close();
      quickToGiveUp.close();
      client.close();
    });
  });
});
