/**
 * The optimizer killed (SIGKILL) in the middle of an iteration and started again on the same address, with
 * the loop and the other services in their own processes: the loop waits for it, re-opens the Train stream and
 * replays the iteration from its journal; the optimizer resumes from its last checkpoint and skips what it had
 * consumed; the run ends with the same weights as an uninterrupted one.
 * Run: node --import tsx --test test/faults/optimizer-restart.test.ts
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { checkpointNames, freePort, journalLines, makeTask, readSummary, referenceRun, type SppoProcess, spawnSppo, waitFor } from "./task.js";
import { startServeAll } from "../cli/processes.js";

const started: { child: ChildProcess }[] = [];
after(() => {
  for (const s of started) s.child.kill("SIGKILL");
});

describe("the optimizer killed and restarted mid-iteration", () => {
  it("resumes from its checkpoint, the loop replays the iteration, and the weights equal an uninterrupted run's", async () => {
    const task = await makeTask("optimizer", { perIteration: 64, optimizer: { checkpointEverySteps: 2 } });
    const reference = await referenceRun(task, join(task.dir, "reference"));

    const checkpoints = join(task.dir, "optimizer", "checkpoints");
    const optimizerEnv = { SPPO_OPTIMIZER__CHECKPOINT_DIR: checkpoints, SPPO_OPTIMIZER__POLICY_DIR: join(task.dir, "optimizer", "policies") };
    const port = await freePort();
    const serveOptimizer = (): SppoProcess => {
      const p = spawnSppo(["serve", "optimizer", "--config", task.config, "--port", String(port)], optimizerEnv);
      started.push(p);
      return p;
    };
    const optimizer = serveOptimizer();
    const services = await startServeAll(
      ["oracle", "generator"].map((name) => ({ args: [name, "--config", task.config, "--port", "0"], env: { SPPO_GENERATOR__OPTIMIZER_TARGET: `127.0.0.1:${port}` } })),
      started,
    );

    const out = join(task.dir, "out");
    const run = spawnSppo(["run", "--config", task.config, "--out", out, "--oracle", `127.0.0.1:${services[0].port}`, "--generator", `127.0.0.1:${services[1].port}`, "--optimizer", `127.0.0.1:${port}`]);
    started.push(run);
    // Kill it once it has checkpointed a few steps into iteration 1.
    await waitFor("a checkpoint in iteration 1", () => checkpointNames(checkpoints).some((n) => /^ckpt-i000001-s0*[2-9]/.test(n)) || run.child.exitCode !== null);
    optimizer.child.kill("SIGKILL");
    await optimizer.exited;
    const linesAtKill = journalLines(out, 1).length;
    assert.ok(linesAtKill < 3 * task.perIteration, "killed before iteration 1 was scored");
    // The loop goes on sampling and judging while the optimizer is down (up to its buffers), then waits.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const restarted = serveOptimizer();

    assert.equal(await run.exited, 0, run.output());
    assert.match(run.output(), /optimizer stream broke: opening it again once the optimizer is back, replaying the iteration/);
    assert.match(restarted.output(), /"msg":"resumed from checkpoint"/);
    assert.doesNotMatch(restarted.output(), /"step":0,"msg":"resumed from checkpoint"/);
    const summary = readSummary(out);
    assert.deepEqual(
      summary.iterations.map((i) => [i.iteration, i.prompts, i.policySha256]),
      reference.iterations.map((i) => [i.iteration, i.prompts, i.policySha256]),
      "the restarted optimizer trained bit-identical weights",
    );
    restarted.child.kill("SIGTERM");
    assert.equal(await restarted.exited, 0);
  });
});
