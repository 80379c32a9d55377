/**
 * Config fields that moved keep working: pipeline.temperature, topP, topK and maxNewTokens (now pipeline.sampling.*)
 * are read at their old places from a file, from SPPO_* variables and by the schema itself, with one warning naming
 * the new place; both places set to different values is an error naming both; a run recorded under the old names
 * resumes under the new ones. Run: node --import tsx --test test/lib/config/moved-fields.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it, mock } from "node:test";
import { loadConfig } from "../../../lib/config/load.js";
import { moveFields } from "../../../lib/config/moved-fields.js";
import { pipelineConfigSchema } from "../../../lib/config/pipeline.js";
import { configSchema } from "../../../lib/config/schema.js";
import { RpcError } from "../../../lib/errors.js";
import { log } from "../../../lib/log.js";
import { checkSameSettings, type RunStateFile, runSettings } from "../../../pipeline/run-state.js";

const dir = mkdtempSync(join(tmpdir(), "sppo-moved-fields-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("moved config fields", () => {
  // First in this file: each warning is given once per process.
  it("reads pipeline.temperature/topP/topK/maxNewTokens from a file at pipeline.sampling, warning once with the new place", () => {
    const warn = mock.method(log, "warn", () => {});
    try {
      const path = join(dir, "old.yaml");
      writeFileSync(path, "pipeline:\n  iterations: 2\n  temperature: 0.5\n  topP: 0.8\n  topK: 7\n  maxNewTokens: 9\n");
      const config = loadConfig({ file: path, env: {} });
      assert.deepEqual(config.pipeline.sampling, { temperature: 0.5, topP: 0.8, topK: 7, maxNewTokens: 9 });
      assert.equal(config.pipeline.iterations, 2);
      assert.equal("temperature" in config.pipeline, false);
      const messages = warn.mock.calls.map((c) => String(c.arguments[1]));
      for (const field of ["temperature", "topP", "topK", "maxNewTokens"]) {
        const named = messages.filter((m) => m.includes(`pipeline.${field} is now pipeline.sampling.${field}`));
        assert.equal(named.length, 1, `one warning for pipeline.${field}, got: ${messages.join(" | ")}`);
      }
      // Parsed again (another command in the same process): no second warning.
      configSchema.parse({ pipeline: { temperature: 0.5 } });
      assert.equal(warn.mock.callCount(), 4);
    } finally {
      warn.mock.restore();
    }
  });

  it("reads them from SPPO_* variables and in the schema itself; an old value equal to the new place's is fine", () => {
    const config = loadConfig({ env: { SPPO_PIPELINE__MAX_NEW_TOKENS: "11" } });
    assert.equal(config.pipeline.sampling.maxNewTokens, 11);
    assert.equal(config.pipeline.sampling.temperature, 0.7, "the other fields keep their defaults");
    assert.equal(pipelineConfigSchema.parse({ topP: 0.5 }).sampling.topP, 0.5);
    assert.equal(pipelineConfigSchema.parse({ topK: 3, sampling: { topK: 3, temperature: 1 } }).sampling.topK, 3);
    assert.deepEqual(pipelineConfigSchema.parse({}).sampling, { temperature: 0.7, topP: 0.9, topK: 0, maxNewTokens: 32 });
  });

  it("refuses the old and the new place set to different values, naming both", () => {
    const path = join(dir, "both.yaml");
    writeFileSync(path, "pipeline:\n  maxNewTokens: 9\n  sampling:\n    maxNewTokens: 12\n");
    assert.throws(
      () => loadConfig({ file: path, env: {} }),
      (err: Error) =>
        RpcError.is(err, "config") && /field pipeline\.maxNewTokens: moved to pipeline\.sampling\.maxNewTokens, which is also set, to another value \(12 there, 9 here\)/.test(err.message),
    );
  });

  it("moves values without touching the input, and leaves sections without old fields alone", () => {
    const input = { temperature: 0.3, seed: 4 };
    const { value, moved, conflicts } = moveFields(input, [{ from: "temperature", to: "sampling.temperature" }]);
    assert.deepEqual(value, { seed: 4, sampling: { temperature: 0.3 } });
    assert.deepEqual(input, { temperature: 0.3, seed: 4 });
    assert.equal(moved.length, 1);
    assert.deepEqual(conflicts, []);
    assert.deepEqual(moveFields(undefined, [{ from: "a", to: "b" }]).value, undefined);
  });

  it("lets a run recorded under the old names resume under the new ones, and still refuses a changed value", () => {
    const config = configSchema.parse({ pipeline: { iterations: 2, sampling: { temperature: 0.5, maxNewTokens: 9 } } });
    const settings = runSettings(config) as { pipeline: Record<string, unknown> };
    // What an earlier version of sppo wrote into run.json: the sampling fields flat in the pipeline section.
    const { sampling, ...rest } = settings.pipeline as { sampling: Record<string, unknown> };
    const old: RunStateFile = { format: 1, startedAt: "", invocation: { config: "run.yaml" }, settings: { ...settings, pipeline: { ...rest, ...sampling } } };
    checkSameSettings(old, config, dir);
    const changed = configSchema.parse({ pipeline: { iterations: 2, sampling: { temperature: 0.6, maxNewTokens: 9 } } });
    assert.throws(() => checkSameSettings(old, changed, dir), /pipeline\.sampling: \{"temperature":0\.5,.*\} → \{"temperature":0\.6,/);
  });
});
