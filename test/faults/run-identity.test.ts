/**
 * Issue 18: a long-lived optimizer never answers a new run with an earlier run's policy. Separate processes, as in
 * the Kubernetes layout (`sppo serve generator|oracle|optimizer`, then `sppo run --generator … --oracle …
 * --optimizer …`), on the fault tests' tiny task (one iteration):
 *  1. run A, then run B with another learning rate against the same optimizer process: B is trained afresh from the
 *     base — its policy equals B's run on a fresh embedded optimizer, not A's — with a journal of its own;
 *  2. the optimizer restarted on the same checkpoint directory (it resumes the run it last trained), then run C (B's
 *     config, a new run): trained afresh again;
 *  3. an optimizer on another base model over those checkpoints refuses to start, in one line naming both models;
 *     with `optimizer.baseMismatch: fresh` it starts, and a run on the generator's base is refused with a message
 *     naming both bases — never trained on, or answered with, A's weights.
 * Run: node --import tsx --test test/faults/run-identity.test.ts
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { parse, stringify } from "yaml";
import { startServe } from "../cli/processes.js";
import { writeTinyPolicy } from "../services/generator/fixtures.js";
import { freePort, journalLines, makeTask, readSummary, referenceRun, type RunSummaryFile, type SppoProcess, spawnSppo } from "./task.js";

const started: { child: ChildProcess }[] = [];
after(() => {
  for (const s of started) s.child.kill("SIGKILL");
});

describe("successive runs against one long-lived optimizer", () => {
  it("trains each new run afresh (also after a restart) and refuses checkpoints and runs on another base", async () => {
    const task = await makeTask("runs", { perIteration: 8, iterations: 1 });
    // Run B's config: the same task with another learning rate (it reaches the optimizer in IterationStart).
    const configB = join(task.dir, "config-b.yaml");
    const doc = parse(readFileSync(task.config, "utf8"));
    writeFileSync(configB, stringify({ ...doc, optimizer: { ...doc.optimizer, learningRate: 5e-3 } }));

    const optimizerDir = join(task.dir, "optimizer");
    const optimizerEnv = { SPPO_OPTIMIZER__CHECKPOINT_DIR: join(optimizerDir, "checkpoints"), SPPO_OPTIMIZER__POLICY_DIR: join(optimizerDir, "policies") };
    const port = await freePort();
    const serveOptimizer = (env: NodeJS.ProcessEnv = {}): SppoProcess => {
      const p = spawnSppo(["serve", "optimizer", "--config", task.config, "--port", String(port)], { ...optimizerEnv, ...env });
      started.push(p);
      return p;
    };
    let optimizer = serveOptimizer();
    const serve = async (name: string): Promise<number> => {
      const s = await startServe([name, "--config", task.config, "--port", "0"], { SPPO_GENERATOR__OPTIMIZER_TARGET: `127.0.0.1:${port}` });
      started.push(s);
      return s.port;
    };
    // B's reference run and the services start together (independent processes: the test's longest wait is
    // process start-up); every one is settled before any failure is reported, so none outlives the test.
    const referenceB$ = referenceRun({ ...task, config: configB }, join(task.dir, "reference-b"));
    const oracle$ = serve("oracle");
    const generator$ = serve("generator");
    await Promise.allSettled([referenceB$, oracle$, generator$]);
    const [referenceB, services] = [await referenceB$, [await oracle$, await generator$]];
    const run = (config: string, out: string): SppoProcess => {
      const p = spawnSppo(["run", "--config", config, "--out", join(task.dir, out), "--oracle", `127.0.0.1:${services[0]}`, "--generator", `127.0.0.1:${services[1]}`, "--optimizer", `127.0.0.1:${port}`]);
      started.push(p);
      return p;
    };
    const finishes = async (config: string, out: string): Promise<RunSummaryFile> => {
      const p = run(config, out);
      assert.equal(await p.exited, 0, p.output());
      return readSummary(join(task.dir, out));
    };
    const shaOf = (s: RunSummaryFile) => s.iterations[0].policySha256;

    // 1. Run A, then run B on the same optimizer process.
    const a = await finishes(task.config, "a");
    const b = await finishes(configB, "b");
    assert.notEqual(shaOf(b), shaOf(a), "run B got its own policy, not A's");
    assert.equal(shaOf(b), shaOf(referenceB), "run B was trained afresh from the base, as on a fresh optimizer");
    assert.ok(b.iterations[0].prompts > 0);
    assert.equal(journalLines(join(task.dir, "b"), 1).length, 3 * b.iterations[0].prompts, "run B has a journal of its own");
    assert.match(optimizer.output(), /is new: training it from the base policy/);
    assert.doesNotMatch(optimizer.output(), /its replay is acknowledged without training/);

    // 2. Restarted on the same checkpoint directory: it resumes the run it last trained (B); run C is new.
    optimizer.child.kill("SIGTERM");
    assert.equal(await optimizer.exited, 0);
    optimizer = serveOptimizer();
    const c = await finishes(configB, "c");
    assert.match(optimizer.output(), /"msg":"resumed from checkpoint"/);
    assert.equal(shaOf(c), shaOf(referenceB), "run C was trained afresh after the restart");
    assert.notEqual(shaOf(c), shaOf(a));
    optimizer.child.kill("SIGTERM");
    assert.equal(await optimizer.exited, 0);

    // 3. Another base model over the same checkpoints: refused at start-up, in one line naming both.
    const otherBase = join(task.dir, "other-policy");
    writeTinyPolicy(otherBase, 99);
    const refused = serveOptimizer({ SPPO_OPTIMIZER__MODEL_DIR: otherBase });
    assert.notEqual(await refused.exited, 0);
    assert.match(refused.output(), /sppo: optimizer\.checkpointDir: checkpoint \S+ckpt-i000001-s\d+ is on another base model \(gpt2 with [\d,]+ parameters, sha256 [0-9a-f]{12}…\) than this optimizer's optimizer\.modelDir \S+other-policy \(sha256 [0-9a-f]{12}…\): point optimizer\.modelDir at that model, give this optimizer another checkpointDir, or set optimizer\.baseMismatch: fresh/);
    assert.doesNotMatch(refused.output(), /\n\s+at /, "one line, no stack");

    // With baseMismatch: fresh it starts from its own base; a run whose generator has A's base is refused.
    optimizer = serveOptimizer({ SPPO_OPTIMIZER__MODEL_DIR: otherBase, SPPO_OPTIMIZER__BASE_MISMATCH: "fresh" });
    const d = run(task.config, "d");
    assert.notEqual(await d.exited, 0);
    assert.match(d.output(), /start\.run: run \S+ \(its base policy, version 0 of its generator\) is on another base model \(sha256 [0-9a-f]{12}…\) than this optimizer's optimizer\.modelDir \S+other-policy/);
    assert.match(d.output(), /give the optimizer and the generator the same base model/);
    const summaryD = join(task.dir, "d", "summary.json");
    assert.ok(!existsSync(summaryD) || readSummary(join(task.dir, "d")).iterations.length === 0, "run D finished no iteration");
    assert.match(optimizer.output(), /a checkpoint on another base model is left unused/);
    optimizer.child.kill("SIGTERM");
    assert.equal(await optimizer.exited, 0);
  });
});
