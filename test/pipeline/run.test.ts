/**
 * The whole loop over gRPC with tiny models: three services started on loopback, two SPPO iterations, the output
 * files and their fields, and the live telemetry stream. Run: node --import tsx --test test/pipeline/run.test.ts
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Telemetry, type TelemetryEvent } from "../../gen/sppo/v1/telemetry_pb.js";
import { createClient } from "../../lib/grpc/client.js";
import { runSelfPlay } from "../../pipeline/run.js";
import { initBackend } from "../../models/index.js";
import { WORDS } from "../services/generator/fixtures.js";
import { runConfig, tinyRun } from "./fixtures.js";

describe("sppo run (embedded services)", () => {
  it("runs two iterations over gRPC and writes summary.json, metrics.jsonl, report.html and checkpoints/", async () => {
    await initBackend("auto"); // the fixture makes tensors: the backend must be ready first
    const subjects = WORDS.filter((w) => !["the", "is", "a", "and", "me", "about", "tell"].includes(w));
    const { policy, prompts, outDir } = tinyRun("sppo-run-", 7, Array.from({ length: 26 }, (_, i) => `tell me about the ${subjects[i % subjects.length]}`));
    const config = runConfig(policy, "synthetic-adjectives", { prompts, iterations: 2, evalPrompts: 6, evalSamples: 1, samplesPerPrompt: 3, maxNewTokens: 6, telemetryPort: 0, progress: false });

    const watched: TelemetryEvent[] = [];
    let watching: Promise<void> | undefined;
    const summary = await runSelfPlay({
      config,
      outDir,
      onTelemetry: (port) => {
        const client = createClient(Telemetry, `127.0.0.1:${port}`);
        watching = (async () => {
          for await (const r of client.watch({ includeHistory: true })) if (r.event) watched.push(r.event);
          client.close();
        })().catch(() => client.close());
      },
    });

    assert.equal(summary.algorithm, "sppo");
    assert.equal(summary.iterations.length, 2);
    const file = JSON.parse(readFileSync(join(outDir, "summary.json"), "utf8"));
    assert.equal(file.algorithm, "sppo");
    assert.deepEqual(
      file.iterations.map((r: { iteration: number; prompts: number; skippedPrompts: number }) => [r.iteration, r.prompts + r.skippedPrompts]),
      [
        [1, 10],
        [2, 10],
      ],
      "each iteration's split is 10 prompts (the tiny random policy's empty responses are dropped and counted)",
    );
    for (const r of file.iterations) {
      assert.ok(r.win_rate_vs_base >= 0 && r.win_rate_vs_base <= 1, `win_rate_vs_base ${r.win_rate_vs_base}`);
      assert.ok(r.win_rate_vs_previous >= 0 && r.win_rate_vs_previous <= 1);
    }
    // Peak RSS: this process's high-water mark, never falling, and at least the memory this test process holds now.
    const [first, second] = file.iterations.map((r: { peak_rss_mb: number }) => r.peak_rss_mb);
    assert.ok(first > 0 && second >= first && file.peak_rss_mb >= second, `peak_rss_mb ${first}, ${second}, ${file.peak_rss_mb}`);
    assert.ok(file.peak_rss_mb * 2 ** 20 >= process.memoryUsage().rss * 0.5);
    assert.deepEqual(
      file.iterations.map((r: { policyVersion: number }) => r.policyVersion),
      [1, 2],
    );

    const events = readFileSync(join(outDir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const steps = events.filter((e) => e.trainStep);
    assert.ok(steps.length >= 2, `train steps in metrics.jsonl: ${steps.length}`);
    for (const key of ["loss", "gradNorm", "learningRate", "tokensPerSecond"]) assert.ok(key in steps[steps.length - 1].trainStep, `trainStep.${key}`);
    assert.equal(events.filter((e) => e.iterationSummary).length, 2);
    assert.ok(events.some((e) => e.progress?.stage === "STAGE_GENERATE"));

    const report = readFileSync(join(outDir, "report.html"), "utf8");
    assert.match(report, /<svg/);
    assert.match(report, /Win rate per iteration/);
    assert.ok(existsSync(join(outDir, "checkpoints")) && readdirSync(join(outDir, "checkpoints")).length > 0, "checkpoints were written");

    await watching;
    assert.ok(watched.some((e) => e.payload.case === "trainStep"), "Watch streamed training steps");
    assert.ok(watched.some((e) => e.payload.case === "iterationSummary"));
  });

  it("runs the comparison losses from the same base and reports the probe exploitability", async () => {
    await initBackend("auto");
    const { policy, prompts, outDir } = tinyRun("sppo-run-compare-", 5, Array.from({ length: 14 }, (_, i) => `tell me about the ${i % 2 ? "cat" : "dog"}`));
    const config = runConfig(policy, "synthetic-intransitive", {
      prompts,
      iterations: 1,
      evalPrompts: 4,
      evalSamples: 1,
      samplesPerPrompt: 3,
      maxNewTokens: 6,
      telemetryPort: -1,
      progress: false,
      probes: ["the cat is kind", "the dog is fast", "the cat is dull"],
      compareAlgorithms: ["dpo"],
    });
    const summary = await runSelfPlay({ config, outDir });
    assert.equal(summary.algorithm, "sppo");
    assert.deepEqual(Object.keys(summary.comparison ?? {}), ["dpo"]);
    const file = JSON.parse(readFileSync(join(outDir, "summary.json"), "utf8"));
    assert.equal(file.comparison.dpo.length, 1);
    for (const r of [file.iterations[0], file.comparison.dpo[0]]) {
      assert.equal(typeof r.probe_exploitability, "number");
      // max over probes of a mean probability, minus ½: within [−½, ½].
      assert.ok(r.probe_exploitability >= -0.5 && r.probe_exploitability <= 0.5, String(r.probe_exploitability));
    }
    assert.ok(existsSync(join(outDir, "dpo", "summary.json")), "the comparison run has its own outputs");
    assert.match(readFileSync(join(outDir, "report.html"), "utf8"), /Probe exploitability/);
  });
});
