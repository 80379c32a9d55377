/**
 * The loop itself killed (SIGKILL) in the middle of an iteration, twice: `sppo run --continue` and then
 * `sppo run --resume DIR` continue it from its journal and checkpoints, the prompts scored before a kill are not
 * sampled or judged again, and the final policy is bit-identical to an uninterrupted run's.
 * Run: node --import tsx --test test/faults/loop-resume.test.ts
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { journaledGroups, journalLines, makeTask, readSummary, referenceRun, spawnSppo, waitFor } from "./task.js";

describe("the loop killed mid-iteration", () => {
  it("`sppo run --resume` continues without re-scoring the journaled prompts and ends with the same weights", async () => {
    const task = await makeTask("loop", { perIteration: 64 });
    const reference = await referenceRun(task, join(task.dir, "reference"));

    const out = join(task.dir, "killed");
    const first = spawnSppo(["run", "--config", task.config, "--out", out]);
    // Kill it once a dozen prompts of iteration 2 are scored.
    await waitFor("iteration 2 to be under way", () => journalLines(out, 2).length >= 3 * 12 || first.child.exitCode !== null);
    first.child.kill("SIGKILL");
    await first.exited;
    const scoredBefore = [...journaledGroups(out, 2).values()].filter((n) => n >= 1).length;
    assert.ok(scoredBefore >= 12 && scoredBefore < task.perIteration, `killed mid-iteration (${scoredBefore} of ${task.perIteration} prompts scored)`);
    assert.equal(readSummary(out).iterations.length, 1, "iteration 1 was finished and recorded");

    // A fresh run into the directory is refused: it would throw the unfinished run away.
    const fresh = spawnSppo(["run", "--config", task.config, "--out", out]);
    assert.equal(await fresh.exited, 1);
    assert.match(fresh.output(), /holds an unfinished run \(1 of 2 iterations done\): continue it with `sppo run --resume/);

    // `--continue` (what a retried Kubernetes Job runs) picks the unfinished run up with the config given; killed
    // again, a little further on, `--resume` finishes it with the config recorded in run.json.
    const continued = spawnSppo(["run", "--continue", "--config", task.config, "--out", out]);
    await waitFor("the continued run to score more of iteration 2", () => journalLines(out, 2).length >= 3 * (scoredBefore + 6) || continued.child.exitCode !== null);
    continued.child.kill("SIGKILL");
    await continued.exited;
    assert.match(continued.output(), /"resumed":\d+,"remaining":\d+,"msg":"resuming the iteration/);
    const resumed = spawnSppo(["run", "--resume", out]);
    assert.equal(await resumed.exited, 0, resumed.output());
    assert.match(resumed.output(), /"resumed":\d+,"remaining":\d+,"msg":"resuming the iteration/);

    const summary = readSummary(out);
    assert.deepEqual(summary.iterations.map((i) => i.iteration), [1, 2]);
    const second = summary.iterations[1];
    assert.ok(second.resumedPrompts !== undefined && second.resumedPrompts > scoredBefore, `resumedPrompts ${second.resumedPrompts}, ${scoredBefore} whole groups in the journal at the first kill`);
    // The tiny policy sometimes answers nothing at all; the judge refuses those sets, and the loop drops them.
    assert.equal(second.prompts + second.skippedPrompts, task.perIteration);
    assert.equal(second.prompts, reference.iterations[1].prompts);
    // Each prompt of iteration 2 was scored exactly once across both processes.
    const groups = journaledGroups(out, 2);
    assert.equal(groups.size, second.prompts);
    assert.ok([...groups.values()].every((n) => n === 1), "no prompt was sampled and judged twice");
    assert.deepEqual(
      summary.iterations.map((i) => i.policySha256),
      reference.iterations.map((i) => i.policySha256),
      "the resumed run trained bit-identical weights",
    );
  });
});
