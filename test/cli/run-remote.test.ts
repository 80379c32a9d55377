/**
 * `sppo run` against services started separately with `sppo serve` (four processes, as in a cluster), with
 * `sppo watch` following its telemetry. Run: node --import tsx --test test/cli/run-remote.test.ts
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { stringify } from "yaml";
import { initBackend } from "../../models/index.js";
import { WORDS, writeTinyPolicy } from "../services/generator/fixtures.js";
import { root, type Started, startServe, startSppo } from "./processes.js";

/** A port free right now (the OS picks it); the loop's telemetry port must be known before `sppo watch` starts. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const started: Started[] = [];
after(() => {
  for (const s of started) s.child.kill("SIGTERM");
});

describe("sppo run against remote services", () => {
  it("drives three `sppo serve` processes and `sppo watch` shows its telemetry", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sppo-remote-"));
    mkdirSync(join(dir, "policy"));
    await initBackend("auto"); // the fixture makes tensors: the backend must be ready first
    writeTinyPolicy(join(dir, "policy"), 11);
    const subjects = WORDS.filter((w) => !["the", "is", "a", "and", "me", "about", "tell"].includes(w));
    writeFileSync(join(dir, "prompts.jsonl"), `${Array.from({ length: 16 }, (_, i) => JSON.stringify({ prompt: `tell me about the ${subjects[i % subjects.length]}` })).join("\n")}\n`);
    const telemetryPort = await freePort();
    const configFile = join(dir, "config.yaml");
    writeFileSync(
      configFile,
      stringify({
        server: { metricsPort: -1, drainDelayMs: 0 },
        generator: { modelDir: join(dir, "policy"), sampling: { maxNewTokens: 5 }, weightsDir: join(dir, "pulled") },
        oracle: { backend: "synthetic-adjectives" },
        optimizer: { modelDir: join(dir, "policy"), checkpointDir: join(dir, "checkpoints"), policyDir: join(dir, "policies"), learningRate: 1e-3, optimizer: "adam", batchSize: 4, eta: 2 },
        pipeline: { prompts: join(dir, "prompts.jsonl"), iterations: 1, evalPrompts: 4, evalSamples: 1, samplesPerPrompt: 3, maxNewTokens: 5, telemetryPort, progress: false },
      }),
    );
    const services: Record<string, number> = {};
    for (const name of ["generator", "oracle", "optimizer"]) {
      const s = await startServe([name, "--port", "0", "--config", configFile]);
      started.push(s);
      services[name] = s.port;
    }

    // The watcher starts first and waits for the loop to come up, as a user starting a dashboard would.
    const watch = spawn(process.execPath, ["bin/sppo.mjs", "watch", `127.0.0.1:${telemetryPort}`, "--history", "--wait", "120"], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    const watchExited = once(watch, "exit");
    let watched = "";
    let watchErrors = "";
    watch.stdout.on("data", (d) => (watched += d));
    watch.stderr.on("data", (d) => (watchErrors += d));

    const run = await startSppo(
      ["run", "--config", configFile, "--out", join(dir, "out"), "--generator", `127.0.0.1:${services.generator}`, "--oracle", `127.0.0.1:${services.oracle}`, "--optimizer", `127.0.0.1:${services.optimizer}`],
      "telemetry: watch with `sppo watch HOST:PORT`",
    );
    started.push(run);
    let stdout = "";
    run.child.stdout!.on("data", (d) => (stdout += d));

    const runCode = await run.exited;
    assert.equal(runCode, 0, run.lines.join("\n"));
    const [watchCode] = await watchExited;
    assert.equal(watchCode, 0, `${watchErrors}\nrun said: ${JSON.stringify(run.ready)} (expected port ${telemetryPort})\n${run.lines.slice(0, 8).join("\n")}`);

    const summary = JSON.parse(readFileSync(join(dir, "out", "summary.json"), "utf8"));
    assert.equal(summary.iterations.length, 1);
    assert.equal(JSON.parse(stdout).iterations[0].iteration, 1);
    assert.match(watched, /step \d+: loss/);
    assert.match(watched, /iteration done: \d+ prompts, win rate vs base/);
    assert.match(watched, /run done/);
  });

  it("uses an oracle in another process through the oracle's remote backend (backend 3)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sppo-remote-oracle-"));
    mkdirSync(join(dir, "policy"));
    await initBackend("auto");
    writeTinyPolicy(join(dir, "policy"), 13);
    writeFileSync(join(dir, "prompts.jsonl"), `${Array.from({ length: 12 }, (_, i) => JSON.stringify({ prompt: `tell me about the ${i % 2 ? "cat" : "bird"}` })).join("\n")}\n`);
    // The other process: any PreferenceOracle implementation; here `sppo serve oracle` with a synthetic judge.
    const judge = await startServe(["oracle", "--port", "0", "--metrics-port", "-1"], { SPPO_ORACLE__BACKEND: "synthetic-adjectives" });
    started.push(judge);
    const configFile = join(dir, "config.yaml");
    writeFileSync(
      configFile,
      stringify({
        server: { metricsPort: -1 },
        generator: { modelDir: join(dir, "policy"), sampling: { maxNewTokens: 5 } },
        oracle: { backend: "remote", remote: { target: `127.0.0.1:${judge.port}` } },
        optimizer: { modelDir: join(dir, "policy"), learningRate: 1e-3, optimizer: "adam", batchSize: 4, eta: 2 },
        pipeline: { prompts: join(dir, "prompts.jsonl"), iterations: 1, evalPrompts: 4, evalSamples: 1, samplesPerPrompt: 3, maxNewTokens: 5, telemetryPort: -1, progress: false },
      }),
    );
    const run = spawn(process.execPath, ["bin/sppo.mjs", "run", "--config", configFile, "--out", join(dir, "out")], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, SPPO_LOG_LEVEL: "info" },
    });
    const runExited = once(run, "exit");
    let log = "";
    run.stderr.on("data", (d) => (log += d));
    const [code] = await runExited;
    assert.equal(code, 0, log);
    assert.equal(JSON.parse(readFileSync(join(dir, "out", "summary.json"), "utf8")).iterations.length, 1);
    assert.match(log, /"backend":"remote"/, "the embedded oracle service ran the remote backend");
    judge.child.kill("SIGTERM");
    const judgeCode = await judge.exited;
    assert.equal(judgeCode, 0);
    const served = judge.lines.filter((l) => l.includes('"msg":"stopped"'));
    assert.equal(served.length, 1, "the judge process shut down cleanly after serving the run");
  });
});
