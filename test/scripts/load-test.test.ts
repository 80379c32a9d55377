/**
 * scripts/load-test.ts, run small: both services in their own processes on loopback, a few clients for a few seconds.
 * Every request gets exactly one answer or one error (none lost, none answered twice), the counts add up, and the
 * tiny queues of both services refuse some requests with RESOURCE_EXHAUSTED.
 * Run: node --import tsx --test test/scripts/load-test.test.ts
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";

const root = new URL("../../", import.meta.url).pathname;

interface TargetResult {
  sent: number;
  answeredOk: number;
  refusedResourceExhausted: number;
  otherErrors: number;
  otherErrorsByCode: Record<string, number>;
  answeredTwice: number;
  lost: number;
  consistent: boolean;
  heldLoadPerSecond: number;
  latencyMs: { okP50: number | null; okP99: number | null };
  seconds: number;
  server: { runs: string | null; rssAtReadyMiB: number | null; peakRssMiB: number | null };
}

/**
 * Runs the script as `npm test` runs this file: at SPPO_LOG_LEVEL=silent (scripts/run-tests.mjs), which its servers
 * must not inherit, since the script waits for their "serving" lines.
 */
function runScript(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "scripts/load-test.ts", ...args], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, SPPO_LOG_LEVEL: "silent" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`load-test did not stop by itself within ${timeoutMs} ms:\n${stderr}`));
    }, timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test("--help prints the options and what is reported; a bad option is one line and the usage, exit 2", async () => {
  const help = await runScript(["--help"], 30_000);
  assert.equal(help.code, 0, help.stderr);
  for (const word of ["--clients", "--queue", "RESOURCE_EXHAUSTED", "lost", "answered twice", "held load", "RSS"]) assert.ok(help.stdout.includes(word), word);
  const bad = await runScript(["--clients", "0"], 30_000);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^load-test: --clients: an integer ≥ 1 is needed, got 0\nUsage:/);
});

/**
 * The script's own bound: servers serving within 120 s, per target S seconds of load plus 30 s for the answers still
 * due, and 15 s per server to stop. A run that exceeds it did not stop by itself (it takes ~10 s of CPU in all).
 */
const SECONDS = 4;
const SCRIPT_BOUND_MS = (120 + 2 * (SECONDS + 30) + 2 * 15) * 1000;

test("a small load run: nothing lost or answered twice, counts consistent, the tiny queues refuse", { timeout: SCRIPT_BOUND_MS + 30_000 }, async () => {
  const { code, stdout, stderr } = await runScript(["--clients", "4", "--requests", "300", "--seconds", String(SECONDS), "--window", "4", "--queue", "1", "--target", "both"], SCRIPT_BOUND_MS + 10_000);
  assert.equal(code, 0, `exit ${code}\n${stdout}\n${stderr.slice(-3000)}`);
  const summary = JSON.parse(stdout.trim()) as { ok: boolean; maxQueuedRequests: number; oracle: TargetResult; generator: TargetResult };
  // What answered: the servers' start-up lines were read (they log at info whatever this process's level).
  assert.deepEqual([summary.oracle.server.runs, summary.generator.server.runs], ["pairwise-onnx", "onnxruntime"]);
  assert.equal(summary.ok, true);
  assert.equal(summary.maxQueuedRequests, 1);
  for (const name of ["oracle", "generator"] as const) {
    const r = summary[name];
    assert.ok(r.sent > 0 && r.sent <= 300, `${name}: sent ${r.sent}`);
    assert.equal(r.lost, 0, `${name}: lost`);
    assert.equal(r.answeredTwice, 0, `${name}: answered twice`);
    assert.equal(r.sent, r.answeredOk + r.refusedResourceExhausted + r.otherErrors, `${name}: ${JSON.stringify(r)}`);
    assert.equal(r.consistent, true);
    assert.equal(r.otherErrors, 0, `${name}: ${JSON.stringify(r.otherErrorsByCode)}`);
    assert.ok(r.answeredOk > 0, `${name}: nothing answered`);
    assert.ok(r.heldLoadPerSecond > 0);
    assert.ok((r.latencyMs.okP50 ?? 0) <= (r.latencyMs.okP99 ?? 0));
    assert.ok((r.server.rssAtReadyMiB ?? 0) > 0, `${name}: no RSS at ready`);
    assert.ok((r.server.peakRssMiB ?? 0) >= (r.server.rssAtReadyMiB ?? 0), `${name}: peak RSS below RSS at ready`);
    // A queue of one request, four clients with four in flight each: both services must refuse some.
    assert.ok(r.refusedResourceExhausted > 0, `${name}: ${JSON.stringify(r)}`);
  }
  // Bounded: S seconds of sending per target, then at most 30 s for the answers still due (the script aborts after;
  // 10 s more for a timer that fires late on a busy machine).
  for (const name of ["oracle", "generator"] as const) assert.ok(summary[name].seconds <= SECONDS + 30 + 10, `${name}: ${summary[name].seconds} s`);
});
