/**
 * A person's mistakes, made with the real `sppo` as separate processes: each ends with exit code 1 and one line
 * that says what to change (naming the setting or flag where there is one), never a stack trace. Also the per-service
 * default ports that let the three `sppo serve` processes run side by side with no flags, and `sppo --version`.
 * Run: node --import tsx --test test/cli/user-errors.test.ts
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { servePorts } from "../../cli/commands/serve.js";
import { loadConfig } from "../../lib/config/load.js";
import type { ServiceName } from "../../services/index.js";
import { root, startServe } from "./processes.js";

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function sppo(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["bin/sppo.mjs", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SPPO_LOG_LEVEL: "silent", ...env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

/** A port taken by another process (here: a plain TCP server of this one) on every interface. */
async function takenPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "0.0.0.0", resolve));
  return { port: (server.address() as { port: number }).port, server };
}

const scratch = join(tmpdir(), `sppo-user-errors-${process.pid}`);
const held: Server[] = [];
const started: Awaited<ReturnType<typeof startServe>>[] = [];
after(() => {
  for (const s of held) s.close();
  for (const s of started) s.child.kill("SIGTERM");
});

describe("a user's mistakes get one line, never a stack trace", () => {
  it("in every command", async () => {
    const busy = await takenPort();
    held.push(busy.server);
    // Runs side by side: each on free ports except the one a case is about.
    const run = { SPPO_PIPELINE__TELEMETRY_PORT: "0", SPPO_SERVER__METRICS_PORT: "-1" };
    const cases: { args: string[]; env?: NodeJS.ProcessEnv; says: RegExp }[] = [
      { args: ["run", "--config", "/nonexistent/run.yaml"], says: /config file \/nonexistent\/run\.yaml: cannot read it/ },
      { args: ["run", "--resume", "/nonexistent-run"], says: /no run\.json there/ },
      { args: ["run", "--iterations", "0"], says: /--iterations.*not a positive integer/ },
      { args: ["run", "--out", join(scratch, "a")], env: { ...run, SPPO_PIPELINE__PROMPTS: "/nonexistent.jsonl" }, says: /\/nonexistent\.jsonl: no such prompt file/ },
      { args: ["run", "--out", join(scratch, "b")], env: { ...run, SPPO_PIPELINE__DASHBOARD_PORT: String(busy.port), SPPO_PIPELINE__HOST: "0.0.0.0" }, says: /dashboard: 0\.0\.0\.0:\d+ is in use by another process; choose another with pipeline\.dashboardPort/ },
      { args: ["run", "--out", join(scratch, "c")], env: { ...run, SPPO_PIPELINE__TELEMETRY_PORT: String(busy.port), SPPO_PIPELINE__HOST: "0.0.0.0" }, says: /telemetry gRPC port: 0\.0\.0\.0:\d+ is in use by another process; choose another with pipeline\.telemetryPort/ },
      {
        args: ["run", "--out", join(scratch, "d"), "--oracle", "127.0.0.1:1"],
        env: { ...run, SPPO_PIPELINE__STARTUP_TIMEOUT_MS: "500" },
        says: /the oracle at 127\.0\.0\.1:1 \(--oracle\) did not answer within 0\.5 s/,
      },
      { args: ["run", "--out", join(scratch, "e")], env: { ...run, SPPO_PIPELINE__DASHBOARD_PORT: "abc" }, says: /field pipeline\.dashboardPort/ },
      { args: ["serve", "oracle", "--port", String(busy.port)], says: /oracle gRPC port: 0\.0\.0\.0:\d+ is in use by another process; choose another with server\.port or --port/ },
      { args: ["serve", "oracle", "--port", "0", "--metrics-port", String(busy.port)], says: /oracle \/metrics port: 0\.0\.0\.0:\d+ is in use by another process; choose another with server\.metricsPort or --metrics-port/ },
      { args: ["watch", "127.0.0.1:1", "--wait", "0.3"], says: /no loop answered at 127\.0\.0\.1:1 within 0\.3 s.*pipeline\.telemetryPort/ },
      { args: ["dashboard", "127.0.0.1:1", "--wait", "0.3"], says: /no loop answered at 127\.0\.0\.1:1 within 0\.3 s/ },
      { args: ["sample", "--model", "/nonexistent", "--prompt", "x"], says: /\/nonexistent\/config\.json: cannot read it/ },
      { args: ["score", "--model", "/nonexistent", "--prompt", "x", "--response", "y"], says: /\/nonexistent\/config\.json: cannot read it/ },
      { args: ["compare", "--oracle", "/nonexistent", "--prompt", "x", "--candidate", "a", "--candidate", "b"], says: /--oracle \/nonexistent: no such directory or file/ },
      { args: ["nash", "--matrix", "/nonexistent.json", "--iterations", "10"], says: /\/nonexistent\.json: cannot read it/ },
      { args: ["nash", "--matrix", "examples/nash/rps.json", "--iterations", "10", "--plot", "/nonexistent/plot.svg"], says: /--plot \/nonexistent\/plot\.svg: cannot write it/ },
      { args: ["export", "--model", "/nonexistent", "--out", join(scratch, "x.onnx")], says: /\/nonexistent\/config\.json: cannot read it/ },
      { args: ["no-such-command"], says: /unknown command 'no-such-command'/ },
    ];
    // Four at a time: each is a Node start-up, a few load models.
    const results: Ran[] = [];
    for (let i = 0; i < cases.length; i += 4) results.push(...(await Promise.all(cases.slice(i, i + 4).map((c) => sppo(c.args, c.env)))));
    const problems = cases.flatMap((c, i) => {
      const r = results[i];
      const where = `sppo ${c.args.join(" ")}`;
      const out: string[] = [];
      if (r.code !== 1) out.push(`${where}: exit code ${r.code}`);
      if (/^\s+at /m.test(r.stderr)) out.push(`${where}: a stack trace:\n${r.stderr}`);
      if (!c.says.test(r.stderr)) out.push(`${where}: expected ${c.says}, said:\n${r.stderr}`);
      // One line of ours ("sppo: …"), or commander's own for a malformed command line ("error: …").
      const lines = r.stderr.split("\n").filter((l) => /^(sppo|error): /.test(l));
      if (lines.length !== 1) out.push(`${where}: ${lines.length} error lines:\n${r.stderr}`);
      if (/"level":/.test(r.stderr)) out.push(`${where}: log lines:\n${r.stderr}`);
      return out;
    });
    assert.deepEqual(problems, []);
  });
});

describe("sppo serve's default ports", () => {
  it("differ per service, so that the three run side by side on one host", () => {
    const config = loadConfig({ env: {} });
    const ports = (["generator", "oracle", "optimizer"] as ServiceName[]).flatMap((name) => Object.values(servePorts(name, config)));
    assert.deepEqual(ports, [50051, 9464, 50052, 9465, 50053, 9466]);
    assert.equal(new Set(ports).size, 6);
    // A config or flag that sets them still wins for every service (the Kubernetes manifests set 9464).
    assert.deepEqual(servePorts("oracle", loadConfig({ env: {}, overrides: { server: { port: 7000, metricsPort: 9000 } } })), { port: 7000, metricsPort: 9000 });
  });

  it("the three start together with no port flags and each serves its own /metrics", async (t) => {
    const defaults = [50051, 50052, 50053, 9464, 9465, 9466];
    const busy: number[] = [];
    for (const port of defaults) {
      const probe = createServer();
      const free = await new Promise<boolean>((resolve) => {
        probe.once("error", () => resolve(false));
        probe.listen(port, "0.0.0.0", () => probe.close(() => resolve(true)));
      });
      if (!free) busy.push(port);
    }
    if (busy.length > 0) {
      t.skip(`default port(s) ${busy.join(", ")} in use on this host by something else`);
      return;
    }
    const env = { SPPO_ORACLE__BACKEND: "synthetic-adjectives" };
    for (const name of ["optimizer", "oracle", "generator"]) started.push(await startServe([name], { ...env, SPPO_OPTIMIZER__CHECKPOINT_DIR: join(scratch, "ckpt"), SPPO_OPTIMIZER__POLICY_DIR: join(scratch, "pol"), SPPO_GENERATOR__OPTIMIZER_TARGET: "127.0.0.1:50053" }));
    const [optimizer, oracle, generator] = started.slice(-3);
    assert.deepEqual([generator.ready.metricsPort, oracle.ready.metricsPort, optimizer.ready.metricsPort], [9464, 9465, 9466]);
    assert.deepEqual([generator.port, oracle.port, optimizer.port], [50051, 50052, 50053]);
    const text = await (await fetch("http://127.0.0.1:9465/metrics")).text();
    assert.match(text, /sppo_grpc_server_handled_total|process_cpu/);
  });
});

describe("sppo --version", () => {
  it("prints the package's version", async () => {
    const { version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
    const r = await sppo(["--version"]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `${version}\n`);
  });
});
