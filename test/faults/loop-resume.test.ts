/**
 * The loop itself stopped in the middle of an iteration, and continued: killed (SIGKILL) twice, `sppo run --continue`
 * and then `sppo run --resume DIR` continue it from its journal and checkpoints; interrupted (SIGINT, Ctrl-C), it
 * stops taking prompts, saves the journal and a checkpoint and exits with one line, and `--resume` finishes it. The
 * prompts scored before a stop are not sampled or judged again, and the final policy is bit-identical (SHA-256) to
 * an uninterrupted run's.
 * Run: node --import tsx --test test/faults/loop-resume.test.ts
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { get } from "node:http";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import { checkpointNames, journaledGroups, journalLines, makeTask, type RunSummaryFile, readSummary, referenceRun, spawnSppo, type Task, waitFor } from "./task.js";

/** The Server-Sent Events a page at `url` receives, until the server ends the stream or goes away. */
function followEvents(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("close", () => resolve(text));
    }).on("error", reject);
  });
}

let task: Task;
let reference: RunSummaryFile;
before(async () => {
  task = await makeTask("loop", { perIteration: 64 });
  reference = await referenceRun(task, join(task.dir, "reference"));
});

describe("the loop killed mid-iteration", () => {
  it("`sppo run --resume` continues without re-scoring the journaled prompts and ends with the same weights", async () => {

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

describe("the loop interrupted (SIGINT) mid-iteration", () => {
  it("stops taking prompts, saves the journal and a checkpoint, exits with one line; `--resume` ends with the same weights", async () => {
    const out = join(task.dir, "interrupted");
    const first = spawnSppo(["run", "--config", task.config, "--out", out]);
    // A page watching the live dashboard: the stop goes through the run's clean-up, which ends its event stream.
    await waitFor("the dashboard's address", () => /dashboard: http:\S+/.test(first.output()) || first.child.exitCode !== null);
    const page = followEvents(`${/dashboard: (http:\S+)/.exec(first.output())?.[1]}events`);
    await waitFor("iteration 2 to be under way", () => journalLines(out, 2).length >= 3 * 12 || first.child.exitCode !== null);
    first.child.kill("SIGINT");
    assert.equal(await first.exited, 130, first.output());
    const seen = await page;
    assert.match(seen, /"state":"RUN_STATE_STOPPED"/, "the page saw the run stop");
    assert.match(seen, /event: end\n/, "the page was told the run ended");
    const lines = first.output().split("\n").filter((l) => l.startsWith("sppo:"));
    assert.equal(lines.length, 1, first.output());
    const stop = /^sppo: stopped on SIGINT in iteration 2 \(sampling and training; (\d+) of 64 prompts journaled, checkpoint (ckpt-[\w-]+)\): continue with `sppo run --resume (.+)`$/.exec(lines[0]);
    assert.ok(stop, lines[0]);
    assert.equal(stop[3], out);
    assert.doesNotMatch(first.output(), /\n\s+at /, "no stack trace");

    // The journal holds whole groups only, as many as the line says; the checkpoint is on disk.
    const groups = journaledGroups(out, 2);
    const scored = Number(stop[1]);
    assert.ok(scored >= 12 && scored < task.perIteration, `stopped mid-iteration (${scored} prompts journaled)`);
    assert.equal(groups.size, scored);
    assert.ok([...groups.values()].every((n) => n === 1), "only whole prompt groups, each once");
    assert.ok(checkpointNames(join(out, "checkpoints")).includes(stop[2]), `checkpoint ${stop[2]} written`);
    assert.equal(readSummary(out).iterations.length, 1, "iteration 1 was finished and recorded");
    // metrics.jsonl was flushed on the way out: its last event is the stop.
    const last = JSON.parse(readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").at(-1) ?? "{}") as { runStatus?: { state: string } };
    assert.equal(last.runStatus?.state, "RUN_STATE_STOPPED");

    const resumed = spawnSppo(["run", "--resume", out]);
    assert.equal(await resumed.exited, 0, resumed.output());
    // The optimizer resumed from the stop's checkpoint: every journaled example already consumed.
    assert.match(resumed.output(), new RegExp(`"iteration":2,"consumed":${3 * scored},"step":\\d+,"msg":"continuing the open iteration"`));
    const summary = readSummary(out);
    assert.deepEqual(summary.iterations.map((i) => i.iteration), [1, 2]);
    assert.equal(summary.iterations[1].resumedPrompts, scored);
    assert.equal(summary.iterations[1].prompts, reference.iterations[1].prompts);
    assert.ok([...journaledGroups(out, 2).values()].every((n) => n === 1), "no prompt was sampled and judged twice");
    assert.deepEqual(
      summary.iterations.map((i) => i.policySha256),
      reference.iterations.map((i) => i.policySha256),
      "the interrupted and resumed run trained bit-identical weights",
    );
  });
});
