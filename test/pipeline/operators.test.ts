/**
 * The loop's operators: marble tests with RxJS's TestScheduler for the pure stages (the request multiplexer they
 * call has its own tests in test/lib/grpc/multiplexer.test.ts).
 * Run: node --import tsx --test test/pipeline/operators.test.ts
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { TestScheduler } from "rxjs/testing";
import { CandidateSchema } from "../../gen/sppo/v1/generator_pb.js";
import { estimateWinRates } from "../../pipeline/estimate-win-rates.js";
import { trainingExamples } from "../../pipeline/train-policy.js";
import type { ComparedSet } from "../../pipeline/types.js";

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

  it("estimateWinRates in score_collapse mode works on the logits of P (marbles)", () => {
    // Hand-derived values are compared to 12 significant digits: the stage's float order of operations is its own.
    const round = (v: unknown): unknown =>
      typeof v === "number" ? Number(v.toPrecision(12)) : Array.isArray(v) ? v.map(round) : v && typeof v === "object" ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, round(x)])) : v;
    const scheduler = new TestScheduler((actual, expected) => assert.deepEqual(round(actual), round(expected)));
    const sigma = (z: number) => 1 / (1 + Math.exp(-z));
    const P = [
      [0.5, sigma(2)],
      [sigma(-2), 0.5],
    ];
    // C_01 = logit P_01 = 2, C_10 = −2: s_0 = mean_j (C_0j − C_j0) = (0 + 4)/2 = 2, s_1 = −2;
    // P̂_0 = mean_j σ(s_0 − s_j) = (½ + σ(4))/2, P̂_1 = (σ(−4) + ½)/2 = 1 − P̂_0.
    const w0 = (0.5 + sigma(4)) / 2;
    scheduler.run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold("--a-|", { a: set("a", P) });
      expectObservable(source.pipe(estimateWinRates("score_collapse"))).toBe("--x-|", {
        x: { ...set("a", P), winRates: [w0, 1 - w0], referenceLogprobs: [-1, -2] },
      });
      expectSubscriptions(source.subscriptions).toBe("^---!");
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
});
