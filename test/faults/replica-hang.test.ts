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
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { logEntries, replicaWithStream, startReplicaSet, trainedExamples } from "./replicas.js";
import { journaledGroups, journalLines, makeTask, readSummary, waitFor } from "./task.js";

const started: { child: ChildProcess }[] = [];
after(() => {
  for (const s of started) s.child.kill("SIGKILL");
});

describe("a generator replica and an oracle replica frozen mid-iteration, connections open", () => {
  // Without deadlines the run would wait on the frozen replicas for ever: the time limit turns that into a failure.
  it("the loop re-sends their requests after pipeline.requestTimeoutMs and finishes; each prompt is processed once", { timeout: 600_000 }, async () => {
    // A deadline far above a tiny model's answer time (milliseconds), far below the test's patience.
    const requestTimeoutMs = 4_000;
    // Keepalive pings would in time find the frozen peers and break their connections: set far off, so that only
    // the deadline can move the requests.
    const task = await makeTask("hang", {
      perIteration: 48,
      pipeline: { generateConcurrency: 4, compareConcurrency: 4, streamsPerService: 4, requestTimeoutMs },
      client: { keepaliveTimeMs: 3_600_000 },
    });
    const { replicas, run: runAgainst } = await startReplicaSet(task, started);
    const out = join(task.dir, "out");
    const run = runAgainst(out);
    await waitFor("iteration 1 to be under way", () => journalLines(out, 1).length >= 3 * 8 || run.child.exitCode !== null);
    // Freeze, of each service, a replica that serves one of the loop's streams; they stay frozen to the end.
    const frozen = [await replicaWithStream(replicas.generator, "Generate"), await replicaWithStream(replicas.oracle, "Compare")];
    for (const replica of frozen) replica.child.kill("SIGSTOP");
    const linesAtFreeze = journalLines(out, 1).length;
    assert.ok(linesAtFreeze < 3 * task.perIteration, "frozen before iteration 1 was scored");

    assert.equal(await run.exited, 0, run.output());
    for (const replica of frozen) assert.equal(replica.child.exitCode, null, "the frozen replicas were still there (frozen, not dead)");
    const resent = logEntries<{ stream: string; timeoutMs: number }>(run.output(), "request unanswered in time: re-sending it on another stream");
    for (const stream of ["generator", "oracle"]) {
      assert.ok(resent.some((r) => r.stream === stream && r.timeoutMs === requestTimeoutMs), `a request held by the frozen ${stream} replica was re-sent: ${JSON.stringify(resent)}`);
    }
    assert.doesNotMatch(run.output(), /"msg":"stream broke: re-sending its requests"/, "no stream broke: only the deadline moved the requests");

    const summary = readSummary(out);
    assert.deepEqual(summary.iterations.map((r) => r.iteration), [1, 2]);
    const trained = trainedExamples(out);
    for (const result of summary.iterations) {
      assert.equal(result.prompts + result.skippedPrompts, task.perIteration, `iteration ${result.iteration}`);
      const groups = journaledGroups(out, result.iteration);
      assert.equal(groups.size, result.prompts, `iteration ${result.iteration}: every scored prompt in the journal`);
      assert.ok([...groups.values()].every((n) => n === 1), `iteration ${result.iteration}: no prompt scored twice`);
      assert.equal(trained.get(result.iteration), 2 * result.prompts, `iteration ${result.iteration}: examples trained on`);
    }
  });
});
