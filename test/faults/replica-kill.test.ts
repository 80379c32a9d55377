/**
 * A generator replica and an oracle replica killed in the middle of an iteration, each with requests in flight
 * (they are frozen with SIGSTOP first, so that the loop's requests pile up on them, then killed with SIGKILL):
 * the loop re-sends their requests to the other replicas, and every prompt of the iteration is sampled, judged and
 * trained on exactly once. Five `sppo serve` processes and `sppo run`, on loopback.
 * Run: node --import tsx --test test/faults/replica-kill.test.ts
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

/** Examples the optimizer reported training on, per iteration (from the TrainStep events in metrics.jsonl). */
function trainedExamples(out: string): Map<number, number> {
  const perIteration = new Map<number, number>();
  for (const line of readFileSync(join(out, "metrics.jsonl"), "utf8").split("\n")) {
    if (!line.includes('"trainStep"')) continue;
    const event = JSON.parse(line) as { iteration?: number; trainStep: { examples?: number } };
    perIteration.set(event.iteration ?? 0, (perIteration.get(event.iteration ?? 0) ?? 0) + (event.trainStep.examples ?? 0));
  }
  return perIteration;
}

describe("a generator replica and an oracle replica killed mid-iteration", () => {
  it("their in-flight requests are re-sent to the other replicas; each prompt is processed exactly once", async () => {
    const task = await makeTask("replicas", { perIteration: 64, pipeline: { generateConcurrency: 4, compareConcurrency: 4, streamsPerService: 4 } });
    const optimizerPort = await freePort();
    const optimizer = await startServe(["optimizer", "--config", task.config, "--port", String(optimizerPort)], {
      SPPO_OPTIMIZER__CHECKPOINT_DIR: join(task.dir, "optimizer", "checkpoints"),
      SPPO_OPTIMIZER__POLICY_DIR: join(task.dir, "optimizer", "policies"),
    });
    started.push(optimizer);
    const replicas: Record<"generator" | "oracle", Served[]> = { generator: [], oracle: [] };
    for (const name of ["generator", "oracle"] as const) {
      for (let i = 0; i < 2; i++) {
        const replica = await startServe([name, "--config", task.config, "--port", "0"], { SPPO_GENERATOR__OPTIMIZER_TARGET: `127.0.0.1:${optimizerPort}` });
        started.push(replica);
        replicas[name].push(replica);
      }
    }
    const target = (list: Served[]) => `ipv4:${list.map((r) => `127.0.0.1:${r.port}`).join(",")}`;

    const out = join(task.dir, "out");
    const run = spawnSppo(["run", "--config", task.config, "--out", out, "--generator", target(replicas.generator), "--oracle", target(replicas.oracle), "--optimizer", `127.0.0.1:${optimizerPort}`]);
    started.push(run);
    await waitFor("iteration 1 to be under way", () => journalLines(out, 1).length >= 3 * 8 || run.child.exitCode !== null);
    const doomed = [replicas.generator[0], replicas.oracle[0]];
    for (const replica of doomed) replica.child.kill("SIGSTOP");
    // Frozen, they hold the requests the loop keeps sending them; the other replicas answer the rest.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const linesAtKill = journalLines(out, 1).length;
    for (const replica of doomed) replica.child.kill("SIGKILL");
    assert.ok(linesAtKill < 3 * task.perIteration, "killed before iteration 1 was scored");

    assert.equal(await run.exited, 0, run.output());
    const resent = run
      .output()
      .split("\n")
      .filter((l) => l.includes('"msg":"stream broke: re-sending its requests"'))
      .map((l) => JSON.parse(l) as { stream: string; requests: number });
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
});
