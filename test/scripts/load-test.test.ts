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
  server: { rssAtReadyMiB: number | null; peakRssMiB: number | null };
}

function runScript(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "scripts/load-test.ts", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
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

test("a small load run: nothing lost or answered twice, counts consistent, the tiny queues refuse", { timeout: 120_000 }, async () => {
  const started = performance.now();
  const { code, stdout, stderr } = await runScript(["--clients", "4", "--requests", "300", "--seconds", "4", "--window", "4", "--queue", "1", "--target", "both"], 110_000);
  assert.equal(code, 0, `exit ${code}\n${stdout}\n${stderr.slice(-3000)}`);
  const summary = JSON.parse(stdout.trim()) as { ok: boolean; maxQueuedRequests: number; oracle: TargetResult; generator: TargetResult };
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
  // Bounded: 4 s of load per target, plus start-up and the drain of the last answers.
  assert.ok(performance.now() - started < 100_000);
});
