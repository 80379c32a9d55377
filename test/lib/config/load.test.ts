/** Config layering and validation errors. Run: node --import tsx --test test/lib/config/load.test.ts */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { configFromEnv, loadConfig } from "../../../lib/config/load.js";
import { RpcError } from "../../../lib/errors.js";

const dir = mkdtempSync(join(tmpdir(), "sppo-config-test-"));
function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe("lib/config", () => {
  it("gives working defaults from nothing", () => {
    const config = loadConfig({ env: {} });
    assert.equal(config.server.host, "0.0.0.0");
    assert.equal(config.server.port, undefined);
    assert.equal(config.client.maxAttempts, 5);
  });

  it("layers defaults ← file ← environment ← flags", () => {
    const path = file("layers.yaml", "server:\n  port: 1000\n  keepaliveTimeMs: 1234\n  shutdownGraceMs: 5\n");
    const config = loadConfig({
      file: path,
      env: { SPPO_SERVER__PORT: "2000", SPPO_SERVER__SHUTDOWN_GRACE_MS: "7" },
      overrides: { server: { port: 3000 } },
    });
    assert.equal(config.server.port, 3000);
    assert.equal(config.server.shutdownGraceMs, 7);
    assert.equal(config.server.keepaliveTimeMs, 1234);
  });

  it("reads JSON files too", () => {
    const config = loadConfig({ file: file("c.json", '{"client": {"deadlineMs": 99}}'), env: {} });
    assert.equal(config.client.deadlineMs, 99);
  });

  it("names the file, the field and the reason for a bad value", () => {
    const path = file("bad.yaml", "server:\n  port: 70000\n");
    assert.throws(
      () => loadConfig({ file: path, env: {} }),
      (err: Error) => RpcError.is(err, "config") && err.message.includes(`config file ${path}: field server.port:`) && /65535/.test(err.message),
    );
  });

  it("rejects unknown fields (typos) with their name", () => {
    const path = file("typo.yaml", "server:\n  prot: 1\n");
    assert.throws(() => loadConfig({ file: path, env: {} }), (err: Error) => RpcError.is(err, "config") && /prot/.test(err.message));
  });

  it("says which layer was wrong for environment variables", () => {
    assert.throws(() => loadConfig({ env: { SPPO_SERVER__PORT: "-3" } }), (err: Error) => /environment \(SPPO_\* variables\): field server\.port/.test(err.message));
  });

  it("reports unreadable files and broken YAML with the path", () => {
    assert.throws(() => loadConfig({ file: join(dir, "missing.yaml"), env: {} }), /missing\.yaml: cannot read it/);
    assert.throws(() => loadConfig({ file: file("broken.yaml", "server: [1,\n"), env: {} }), /broken\.yaml: not valid YAML/);
  });

  it("loads every shipped configuration; the comparison examples name the four losses over ≥ 5 seeds", () => {
    const root = fileURLToPath(new URL("../../../", import.meta.url));
    const examples = readdirSync(join(root, "examples")).filter((name) => name.endsWith(".yaml"));
    for (const name of ["intransitive.yaml", "table1.yaml"]) assert.ok(examples.includes(name), `examples/${name}`);
    for (const name of examples) loadConfig({ file: join(root, "examples", name), env: {} });
    loadConfig({ file: join(root, "assets", "default-task.yaml"), env: {} });
    for (const name of ["intransitive.yaml", "table1.yaml"]) {
      const config = loadConfig({ file: join(root, "examples", name), env: {} });
      // sppo compare-runs' defaults: optimizer.algorithm and pipeline.compareAlgorithms, pipeline.compareSeeds.
      assert.deepEqual([config.optimizer.algorithm, ...config.pipeline.compareAlgorithms].sort(), ["dpo", "ipo", "sppo", "sppo_hard"], name);
      assert.ok(config.pipeline.compareSeeds >= 5, `${name}: ${config.pipeline.compareSeeds} seeds`);
    }
    assert.ok(loadConfig({ file: join(root, "examples", "intransitive.yaml"), env: {} }).pipeline.probes.length > 0, "the intransitive example measures probe exploitability");
  });

  it("maps SCREAMING_SNAKE env names onto camelCase fields", () => {
    assert.deepEqual(configFromEnv({ SPPO_SERVER__MAX_MESSAGE_BYTES: "10", SPPO_OTHER: "x", HOME: "/" }), { server: { maxMessageBytes: 10 } });
  });
});
