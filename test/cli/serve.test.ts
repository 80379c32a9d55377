/**
 * `sppo serve NAME` as a user runs it: a separate process, checked by a client in another language (Python grpcio),
 * then stopped with SIGTERM. Run: node --import tsx --test test/cli/serve.test.ts
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { initBackend } from "../../models/index.js";
import { writeTinyPolicy } from "../services/generator/fixtures.js";
import { root, startServe } from "./processes.js";
const python = "/usr/bin/python3";

function hasPythonGrpc(): boolean {
  try {
    execFileSync(python, ["-c", "import grpc"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

// A tiny policy and scratch directories, so the test needs nothing but the code.
const scratch = mkdtempSync(join(tmpdir(), "sppo-serve-test-"));
mkdirSync(join(scratch, "policy"));
await initBackend("auto"); // the fixture makes tensors: the backend must be ready first
writeTinyPolicy(join(scratch, "policy"), 3);
const env = {
  SPPO_GENERATOR__MODEL_DIR: join(scratch, "policy"),
  SPPO_OPTIMIZER__MODEL_DIR: join(scratch, "policy"),
  SPPO_OPTIMIZER__CHECKPOINT_DIR: join(scratch, "checkpoints"),
  SPPO_OPTIMIZER__POLICY_DIR: join(scratch, "policies"),
};

describe("sppo serve", () => {
  for (const [name, typeName] of [
    ["generator", "sppo.v1.Generator"],
    ["oracle", "sppo.v1.PreferenceOracle"],
    ["optimizer", "sppo.v1.Optimizer"],
  ] as const) {
    it(`serves ${name}: SERVING and reflection to a Python client, clean exit on SIGTERM`, { skip: !hasPythonGrpc() && "python3-grpcio is not installed (apt-get install python3-grpcio)" }, async () => {
      const { child, port, lines, exited } = await startServe([name, "--port", "0", "--metrics-port", "-1"], env);
      try {
        const out = execFileSync(python, ["test/interop/health_reflection.py", `127.0.0.1:${port}`, typeName], { cwd: root, encoding: "utf8" });
        const reply = JSON.parse(out) as { health: string; services: string[] };
        assert.equal(reply.health, "SERVING");
        assert.ok(reply.services.includes(typeName), `reflection lists ${typeName}: ${reply.services}`);
        assert.ok(reply.services.includes("grpc.health.v1.Health"));
      } finally {
        child.kill("SIGTERM");
      }
      const code = await exited;
      assert.equal(code, 0, lines.join("\n"));
      assert.ok(lines.some((l) => l.includes('"msg":"stopped"')));
    });
  }

  it("fails at start-up on an invalid config file, naming the file, the field and the reason", async () => {
    const { writeFileSync } = await import("node:fs");
    const dir = mkdtempSync(join(tmpdir(), "sppo-config-"));
    const file = join(dir, "bad.yaml");
    writeFileSync(file, "server:\n  maxMessageBytes: -5\n");
    const child = spawn(process.execPath, ["bin/sppo.mjs", "serve", "oracle", "--config", file], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const [code] = await once(child, "exit");
    assert.equal(code, 1);
    assert.match(stderr, new RegExp(`config file ${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: field server\\.maxMessageBytes: .*`));
  });

  it("lists serve in --help", () => {
    const help = execFileSync(process.execPath, ["bin/sppo.mjs", "--help"], { cwd: root, encoding: "utf8" });
    assert.match(help, /serve \[options\] <service>/);
  });
});
