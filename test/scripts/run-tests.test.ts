/**
 * `npm test`'s output stays readable: the services and loops the tests start log nothing unless asked
 * (scripts/run-tests.mjs runs them at SPPO_LOG_LEVEL=silent; SPPO_LOG_LEVEL=info shows the lines).
 * Run: node --import tsx --test test/scripts/run-tests.test.ts
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { root } from "../cli/processes.js";

function runTests(env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["scripts/run-tests.mjs", "test/scripts/fixtures/logging.test.ts"], { cwd: root, stdio: ["ignore", "pipe", "pipe"], env });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("exit", (code) => resolve({ code, output }));
  });
}

test("the test runner's output has no log lines unless SPPO_LOG_LEVEL asks for them", async () => {
  // A test runner inside a test file: without NODE_TEST_CONTEXT it runs as `npm test` would.
  const { SPPO_LOG_LEVEL: _level, NODE_TEST_CONTEXT: _context, ...env } = process.env;
  const [quiet, loud] = await Promise.all([runTests(env), runTests({ ...env, SPPO_LOG_LEVEL: "info" })]);
  assert.equal(quiet.code, 0, quiet.output);
  assert.match(quiet.output, /serves, logs and stops/);
  assert.doesNotMatch(quiet.output, /"level":/, "no JSON log line");
  assert.equal(loud.code, 0, loud.output);
  assert.match(loud.output, /"msg":"an info line from a test"/, "asked for, the lines are there (so the quiet run's silence is the level's doing)");
  assert.match(loud.output, /"msg":"serving"/);
});
