/**
 * The loop's telemetry hub over a long run: the history it keeps in memory stays bounded (count and encoded bytes)
 * while metrics.jsonl receives every event, in order, through the asynchronous writer; Watch's include_history
 * replays what is kept, then follows live events (a real gRPC server on loopback).
 * Run: node --import tsx --test test/pipeline/telemetry.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { toBinary } from "@bufbuild/protobuf";
import { RunState, Stage, Telemetry, type TelemetryEvent, TelemetryEventSchema } from "../../gen/sppo/v1/telemetry_pb.js";
import { createClient } from "../../lib/grpc/client.js";
import { mount } from "../../lib/grpc/serve.js";
import { describeEvent, TelemetryHub, telemetryImplementation, writeJsonl } from "../../pipeline/telemetry.js";
import { serveForTest } from "../lib/grpc/harness.js";

const dir = mkdtempSync(join(tmpdir(), "sppo-telemetry-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The `done` field of a progress event: the test's sequence number. */
const seq = (e: TelemetryEvent) => (e.payload.case === "progress" ? e.payload.value.done : -1);
const bytesOf = (events: readonly TelemetryEvent[]) => events.reduce((n, e) => n + toBinary(TelemetryEventSchema, e).length, 0);

describe("TelemetryHub", () => {
  it("keeps the newest historyEvents in memory over a long run while metrics.jsonl gets every event in order", async () => {
    const limit = 500;
    const hub = new TelemetryHub("run-long", "pipeline", { historyEvents: limit });
    const path = join(dir, "metrics.jsonl");
    const writer = writeJsonl(hub, path);
    const total = 60_000;
    const kept: number[] = [];
    const keptBytes: number[] = [];
    for (let i = 1; i <= total; i++) {
      hub.progress(1 + Math.floor(i / 10_000), Stage.GENERATE, i, total, Date.now());
      if (i % 5_000 === 0) {
        kept.push(hub.history.length);
        keptBytes.push(bytesOf(hub.history));
        // Let the writer's batches go out, as the loop's awaits do.
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    assert.equal(hub.emitted, total);
    assert.ok(kept.every((n) => n === limit), `retained counts ${kept}`);
    // Same kind of event throughout: the kept bytes stay within a few percent of the first measurement.
    assert.ok(Math.max(...keptBytes) <= keptBytes[0] * 1.05, `retained bytes ${keptBytes}`);
    assert.deepEqual(hub.history.map(seq), Array.from({ length: limit }, (_, i) => total - limit + 1 + i), "the newest events, oldest first");

    await writer.close();
    assert.equal(writer.pendingBytes, 0);
    const lines = readFileSync(path, "utf8").trim().split("\n");
    assert.equal(lines.length, total);
    const order = lines.map((l) => (JSON.parse(l) as { progress: { done: number } }).progress.done);
    assert.ok(order.every((done, i) => done === i + 1), "every event written once, in emission order");
  });

  it("historyEvents 0 keeps nothing; a negative bound is refused", () => {
    const hub = new TelemetryHub("run-none", "pipeline", { historyEvents: 0 });
    for (let i = 0; i < 10; i++) hub.progress(1, Stage.COMPARE, i, 10, Date.now());
    assert.equal(hub.history.length, 0);
    assert.equal(hub.emitted, 10);
    assert.throws(() => new TelemetryHub("x", "pipeline", { historyEvents: -1 }), /historyEvents must be an integer ≥ 0, got -1/);
  });

  it("Watch with include_history replays the kept events, then follows live ones", async () => {
    const hub = new TelemetryHub("run-watch", "pipeline", { historyEvents: 5 });
    for (let i = 1; i <= 20; i++) hub.progress(1, Stage.TRAIN, i, 20, Date.now());
    const server = await serveForTest([mount(Telemetry, telemetryImplementation(hub))]);
    const client = createClient(Telemetry, `127.0.0.1:${server.port}`);
    try {
      const seen: TelemetryEvent[] = [];
      for await (const response of client.watch({ includeHistory: true })) {
        if (!response.event) continue;
        seen.push(response.event);
        if (seen.length === 5) {
          hub.progress(1, Stage.TRAIN, 21, 21, Date.now());
          hub.emit({ payload: { case: "runStatus", value: { state: RunState.STOPPED, message: "on SIGINT" } } });
          hub.complete();
        }
      }
      assert.deepEqual(seen.slice(0, 6).map(seq), [16, 17, 18, 19, 20, 21]);
      assert.match(describeEvent(seen[6]), /run stopped: on SIGINT$/);
    } finally {
      client.close();
      await server.shutdown(0);
    }
  });
});
