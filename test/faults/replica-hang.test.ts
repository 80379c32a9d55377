/**
 * A generator replica and an oracle replica frozen (SIGSTOP) in the middle of an iteration and left frozen until the
 * run has ended: their connections stay open, so nothing breaks and only the per-request deadline
 * (pipeline.requestTimeoutMs) can move their requests. The loop re-sends each request they hold to another stream,
 * the run finishes both iterations, and every prompt is sampled, judged and trained on exactly once. Five
 * `sppo serve` processes and `sppo run`, on loopback.
 * Run: node --import tsx --test test/faults/replica-hang.test.ts
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { startServe } from "../cli/processes.js";
import { freePort, journaledGroups, journalLines, makeTask, readSummary, spawnSppo, waitFor } from "./task.js";

type Served = Awaited<ReturnType<typeof startServe>>;

const started: { child: ChildProcess }[] = [];
after(() => {
  for (const s of started) s.child.kill("SIGKILL");
});

/** The first of `replicas` serving at least one `method` stream right now (its Prometheus in-flight gauge). */
async function replicaWithStream<R extends { metricsPort: number }>(replicas: R[], method: string): Promise<R> {
  for (const replica of replicas) {
    const text = await (await fetch(`http://127.0.0.1:${replica.metricsPort}/metrics`)).text();
    const open = new RegExp(`sppo_grpc_server_in_flight\\{method="[^"]*/${method}"\\} (\\d+)`).exec(text);
    if (open && Number(open[1]) >= 1) return replica;
  }
  throw new Error(`no replica serves a ${method} stream`);
}

describe("a generator replica and an oracle replica frozen mid-iteration, connections open", () => {
  it("the loop re-sends their requests after pipeline.requestTimeoutMs and finishes; each prompt is processed once", async () => {
    // A deadline far above a tiny model's answer time (milliseconds), far below the test's patience.
    const requestTimeoutMs = 4_000;
    // Keepalive pings would in time find the frozen peers and break their connections: set far off, so that only
    // the deadline can move the requests.
    const task = await makeTask("hang", {
      perIteration: 48,
      pipeline: { generateConcurrency: 4, compareConcurrency: 4, streamsPerService: 4, requestTimeoutMs },
      client: { keepaliveTimeMs: 3_600_000 },
    });
    const optimizerPort = await freePort();
    const optimizer = await startServe(["optimizer", "--config", task.config, "--port", String(optimizerPort)], {
      SPPO_OPTIMIZER__CHECKPOINT_DIR: join(task.dir, "optimizer", "checkpoints"),
      SPPO_OPTIMIZER__POLICY_DIR: join(task.dir, "optimizer", "policies"),
    });
    started.push(optimizer);
    const replicas: Record<"generator" | "oracle", (Served & { metricsPort: number })[]> = { generator: [], oracle: [] };
    for (const name of ["generator", "oracle"] as const) {
      for (let i = 0; i < 2; i++) {
        const metricsPort = await freePort();
        const replica = await startServe([name, "--config", task.config, "--port", "0", "--metrics-port", String(metricsPort)], { SPPO_GENERATOR__OPTIMIZER_TARGET: `127.0.0.1:${optimizerPort}` });
        started.push(replica);
        replicas[name].push({ ...replica, metricsPort });
      }
    }
    const target = (list: Served[]) => `ipv4:${list.map((r) => `127.0.0.1:${r.port}`).join(",")}`;

    const out = join(task.dir, "out");
    const run = spawnSppo(["run", "--config", task.config, "--out", out, "--generator", target(replicas.generator), "--oracle", target(replicas.oracle), "--optimizer", `127.0.0.1:${optimizerPort}`]);
    started.push(run);
    await waitFor("iteration 1 to be under way", () => journalLines(out, 1).length >= 3 * 8 || run.child.exitCode !== null);
    // Freeze, of each service, a replica that serves one of the loop's streams; they stay frozen to the end.
    const frozen = [await replicaWithStream(replicas.generator, "Generate"), await replicaWithStream(replicas.oracle, "Compare")];
    for (const replica of frozen) replica.child.kill("SIGSTOP");
    const linesAtFreeze = journalLines(out, 1).length;
    assert.ok(linesAtFreeze < 3 * task.perIteration, "frozen before iteration 1 was scored");

    assert.equal(await run.exited, 0, run.output());
    for (const replica of frozen) assert.equal(replica.child.exitCode, null, "the frozen replicas were still there (frozen, not dead)");
    const resent = run
      .output()
      .split("\n")
      .filter((l) => l.includes('"msg":"request unanswered in time: re-sending it on another stream"'))
      .map((l) => JSON.parse(l) as { stream: string; timeoutMs: number });
    for (const stream of ["generator", "oracle"]) {
      assert.ok(resent.some((r) => r.stream === stream && r.timeoutMs === requestTimeoutMs), `a request held by the frozen ${stream} replica was re-sent: ${JSON.stringify(resent)}`);
    }
    assert.doesNotMatch(run.output(), /"msg":"stream broke: re-sending its requests"/, "no stream broke: only the deadline moved the requests");

    const summary = readSummary(out);
    assert.deepEqual(summary.iterations.map((r) => r.iteration), [1, 2]);
    const trained = new Map<number, number>();
    for (const line of readFileSync(join(out, "metrics.jsonl"), "utf8").split("\n")) {
      if (!line.includes('"trainStep"')) continue;
      const event = JSON.parse(line) as { iteration?: number; trainStep: { examples?: number } };
      trained.set(event.iteration ?? 0, (trained.get(event.iteration ?? 0) ?? 0) + (event.trainStep.examples ?? 0));
    }
    for (const result of summary.iterations) {
      assert.equal(result.prompts + result.skippedPrompts, task.perIteration, `iteration ${result.iteration}`);
      const groups = journaledGroups(out, result.iteration);
      assert.equal(groups.size, result.prompts, `iteration ${result.iteration}: every scored prompt in the journal`);
      assert.ok([...groups.values()].every((n) => n === 1), `iteration ${result.iteration}: no prompt scored twice`);
      assert.equal(trained.get(result.iteration), 2 * result.prompts, `iteration ${result.iteration}: examples trained on`);
    }
  });
});
