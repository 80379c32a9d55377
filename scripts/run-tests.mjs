// Runs every test/**/*.test.ts with node's test runner (Node 20's --test does not expand globs itself).
// Usage: node scripts/run-tests.mjs [FILTER...]   FILTER: substrings of test paths to run only those, or the path of
// one test file (also one under a fixtures/ folder, which are otherwise left out).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const find = (dir) =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === "fixtures" ? [] : find(path);
    return entry.name.endsWith(".test.ts") ? [relative(root, path)] : [];
  });
const filters = process.argv.slice(2);
const named = filters.filter((f) => f.endsWith(".test.ts") && existsSync(join(root, f)));
const files = [
  ...new Set([
    ...find(join(root, "test"))
      .sort()
      .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x))),
    ...named,
  ]),
];
if (files.length === 0) {
  console.error(`no test files match ${filters.join(", ")}`);
  process.exit(1);
}
// Quiet logs: the services and loops that tests start in-process log nothing unless asked
// (SPPO_LOG_LEVEL=info npm test shows them). A test that reads a child process's log lines sets the child's level
// itself (test/cli/processes.ts, test/faults/task.ts).
const result = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-concurrency=1", "--test-reporter=spec", ...files], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, SPPO_LOG_LEVEL: process.env.SPPO_LOG_LEVEL ?? "silent" },
});
process.exit(result.status ?? 1);
