/**
 * A generator replica and an oracle replica killed in the middle of an iteration, each with requests in flight
 * (they are frozen with SIGSTOP first, so that the loop's requests pile up on them, then killed with SIGKILL):
 * the loop re-sends their requests to the other replicas, and every prompt of the iteration is sampled, judged and
 * trained on exactly once. Five `sppo serve` processes and `sppo run`, on loopback.
 * Run: node --import tsx --test test/faults/replica-kill.test.ts
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { startServeAll } from "../cli/processes.js";
import { firstReplicaWithStream, logEntries, startReplicaSet, trainedExamples } from "./replicas.js";
import { freePort, journaledGroups, journalLines, makeTask, readSummary, spawnSppo, waitFor } from "./task.js";

const started: { child: ChildProcess }[] = [];
after(() => {
  for (const s of started) s.child.kill("SIGKILL");
});

describe("a generator replica and an oracle replica killed mid-iteration", () => {
  it("their in-flight requests are re-sent to the other replicas; each prompt is processed exactly once", async () => {
    const task = await makeTask("replicas", { perIteration: 64, pipeline: { generateConcurrency: 4, compareConcurrency: 4, streamsPerService: 4 } });
    const { replicas, run: runAgainst } = await startReplicaSet(task, started);
    const out = join(task.dir, "out");
    const run = runAgainst(out);
    // Until both replicas of a service are connected round_robin puts new streams on the ready one, so the loop's
    // first streams may all be on one replica: doom, of each service, a replica that serves one of its streams. Each is
    // frozen as soon as its stage has begun (64 prompts, 4 at a time: the loop keeps sending it requests, which pile up
    // on it), then killed. Waiting longer raced the loop: on a quiet machine sampling and judging could be over.
    for (const [list, method] of [
      [replicas.generator, "Generate"],
      [replicas.oracle, "Compare"],
    ] as const) {
      const doomed = await firstReplicaWithStream(list, method, run);
      doomed.child.kill("SIGSTOP");
      await new Promise((resolve) => setTimeout(resolve, 500));
      doomed.child.kill("SIGKILL");
    }
    assert.ok(journalLines(out, 1).length < 3 * task.perIteration, "killed before iteration 1 was scored");

    assert.equal(await run.exited, 0, run.output());
    const resent = logEntries<{ stream: string; requests: number }>(run.output(), "stream broke: re-sending its requests");
    for (const stream of ["generator", "oracle"]) {
      assert.ok(resent.some((r) => r.stream === stream && r.requests >= 1), `the ${stream} replica's in-flight requests were re-sent: ${JSON.stringify(resent)}`);
    }

    const summary = readSummary(out);
    const trained = trainedExamples(out);
    for (const result of summary.iterations) {
      // Every prompt is either trained on or dropped (the judge refuses an empty response), none is lost.
      assert.equal(result.prompts + result.skippedPrompts, task.perIteration, `iteration ${result.iteration}`);
      const groups = journaledGroups(out, result.iteration);
      assert.equal(groups.size, result.prompts, `iteration ${result.iteration}: every scored prompt in the journal`);
      assert.ok([...groups.values()].every((n) => n === 1), `iteration ${result.iteration}: no prompt scored twice`);
      // Chosen and rejected of each prompt: two examples per prompt reached the optimizer's steps, no more.
      assert.equal(trained.get(result.iteration), 2 * result.prompts, `iteration ${result.iteration}: examples trained on`);
    }
  });

  it("with one generator replica, killed and started again on the same address, its requests wait for it and are re-sent", async () => {
    const task = await makeTask("restart", { perIteration: 48 });
    const optimizerPort = await freePort();
    const [, oracle] = await startServeAll(
      [
        {
          args: ["optimizer", "--config", task.config, "--port", String(optimizerPort)],
          env: { SPPO_OPTIMIZER__CHECKPOINT_DIR: join(task.dir, "optimizer", "checkpoints"), SPPO_OPTIMIZER__POLICY_DIR: join(task.dir, "optimizer", "policies") },
        },
        { args: ["oracle", "--config", task.config, "--port", "0"] },
      ],
      started,
    );
    const generatorPort = await freePort();
    const serveGenerator = () => {
      const p = spawnSppo(["serve", "generator", "--config", task.config, "--port", String(generatorPort)], { SPPO_GENERATOR__OPTIMIZER_TARGET: `127.0.0.1:${optimizerPort}` });
      started.push(p);
      return p;
    };
    const generator = serveGenerator();

    const out = join(task.dir, "out");
    const run = spawnSppo(["run", "--config", task.config, "--out", out, "--generator", `127.0.0.1:${generatorPort}`, "--oracle", `127.0.0.1:${oracle.port}`, "--optimizer", `127.0.0.1:${optimizerPort}`]);
    started.push(run);
    // In iteration 2 the generator holds version 1; the one started again holds only the base.
    await waitFor("iteration 2 to be under way", () => journalLines(out, 2).length >= 3 * 4 || run.child.exitCode !== null);
    generator.child.kill("SIGSTOP");
    await new Promise((resolve) => setTimeout(resolve, 300));
    generator.child.kill("SIGKILL");
    await generator.exited;
    assert.ok(journalLines(out, 2).length < 3 * task.perIteration, "killed before iteration 2 was scored");
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const again = serveGenerator();

    assert.equal(await run.exited, 0, run.output());
    assert.match(run.output(), /"stream":"generator","requests":[1-9]\d*,.*"msg":"stream broke: re-sending its requests"/);
    assert.match(again.output(), /"version":1,.*"msg":"generator: pinned policy version pulled on demand \(current unchanged\)"/);
    for (const result of readSummary(out).iterations) {
      assert.equal(result.prompts + result.skippedPrompts, task.perIteration, `iteration ${result.iteration}`);
      const groups = journaledGroups(out, result.iteration);
      assert.equal(groups.size, result.prompts);
      assert.ok([...groups.values()].every((n) => n === 1), `iteration ${result.iteration}: no prompt scored twice`);
    }
  });
});
