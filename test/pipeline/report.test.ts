/**
 * report.html as a reader sees it: the table's columns (no column without a value), the charts drawn by the one
 * chart writer with the iterations marked on the step charts and throughput in plain numbers.
 * Run: node --import tsx --test test/pipeline/report.test.ts
 */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { describe, it } from "node:test";
import { type TelemetryEvent, TelemetryEventSchema } from "../../gen/sppo/v1/telemetry_pb.js";
import type { IterationResult } from "../../pipeline/loop.js";
import { renderReport } from "../../pipeline/report.js";

const iteration = (i: number, extra: Partial<IterationResult> = {}): IterationResult => ({
  iteration: i,
  prompts: 12,
  skippedPrompts: 0,
  policyVersion: i,
  policySha256: "ab".repeat(32),
  win_rate_vs_base: 0.5 + 0.05 * i,
  win_rate_vs_previous: 0.55,
  seconds: 3.5,
  peak_rss_mb: 100,
  ...extra,
});

function steps(): TelemetryEvent[] {
  return [1, 1, 1, 2, 2, 2].map((it, i) =>
    create(TelemetryEventSchema, {
      iteration: it,
      payload: {
        case: "trainStep",
        value: { step: BigInt(i + 1), loss: [1.1982, 0.9, 0.31, 0.8, 0.5, 0.45][i], chosenDelta: 0.1 * i, rejectedDelta: -0.1 * i, chosenTarget: 1.2, rejectedTarget: -1.1, tokensPerSecond: 6000 + 100 * i },
      },
    }),
  );
}

describe("report.html", () => {
  it("heads its columns for what they hold and leaves out a column with no value", () => {
    const html = renderReport({ title: "t", algorithm: "sppo", iterations: [iteration(1), iteration(2)], events: steps() });
    const headers = [...html.matchAll(/<th>([^<]*)<\/th>/g)].map((m) => m[1]);
    assert.deepEqual(headers, ["algorithm", "iteration", "prompts", "win rate vs base", "vs previous", "policy", "seconds"]);
    assert.match(html, /<tr><td>sppo<\/td><td>1<\/td><td>12<\/td><td>0.550<\/td>/);
    assert.doesNotMatch(html, /—/, "no cell without a value");
    const withProbes = renderReport({ title: "t", algorithm: "sppo", iterations: [iteration(1, { probe_exploitability: 0.125 })], events: [] });
    assert.match(withProbes, /<th>probe exploitability<\/th>/);
    assert.match(withProbes, /<td>0.125<\/td>/);
  });

  it("marks the iterations on the step charts, titles the axes and prints throughput as plain numbers", () => {
    const html = renderReport({ title: "t", algorithm: "sppo", iterations: [iteration(1), iteration(2)], events: steps() });
    const charts = html.split("<svg").slice(1);
    assert.equal(charts.length, 5, "win rate, loss, log-probs, Δ, throughput");
    const throughput = charts.find((c) => c.includes('aria-label="Training throughput"'))!;
    assert.doesNotMatch(throughput, /e\+/, "no 6.0e+3 tick labels");
    assert.match(throughput, />6 0\d0</);
    for (const chart of charts.slice(1)) {
      assert.match(chart, />it 1<\/text>/);
      assert.match(chart, />it 2<\/text>/, "iteration 2 starts between steps 3 and 4");
      assert.match(chart, /rotate\(-90/, "a y axis title");
    }
    const delta = charts.find((c) => c.includes("against its target"))!;
    assert.match(delta, /chosen target η\(P̂−½\)/);
    assert.match(delta, /rejected target η\(P̂−½\)/);
  });
});
