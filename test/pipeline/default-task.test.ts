/**
 * End to end: the embedded default task (assets/default-task.yaml — the policy, the pairwise ONNX oracle and the
 * prompts the project makes) improves its policy under SPPO. The run is the default's first two iterations (the same
 * 112-prompt splits and evaluation), with the three services on loopback gRPC: the new policy must beat the base
 * (win rate > ½) after each iteration, by more after the second, and beat the previous policy.
 * Run: node --import tsx --test test/pipeline/default-task.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { loadConfig } from "../../lib/config/load.js";
import { loadPrompts } from "../../pipeline/prompts.js";
import { runSelfPlay } from "../../pipeline/run.js";

const dir = mkdtempSync(join(tmpdir(), "sppo-default-task-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("the default task", () => {
  it("improves the policy: win rate against the base above ½ and rising over two iterations", async () => {
    const defaults = loadConfig({ file: "assets/default-task.yaml", env: {} });
    // The default's 3 splits of the training prompts, of which the first two are run.
    const training = (await loadPrompts(defaults.pipeline.prompts)).length - defaults.pipeline.evalPrompts;
    const config = loadConfig({
      file: "assets/default-task.yaml",
      env: {},
      overrides: {
        server: { metricsPort: -1 },
        pipeline: { iterations: 2, promptsPerIteration: Math.floor(training / defaults.pipeline.iterations), telemetryPort: -1, progress: false },
      },
    });
    const summary = await runSelfPlay({ config, outDir: join(dir, "out") });
    const rates = summary.iterations.map((r) => ({ vsBase: r.win_rate_vs_base, vsPrevious: r.win_rate_vs_previous, prompts: r.prompts }));
    const shown = JSON.stringify(rates);
    assert.equal(rates.length, 2, shown);
    assert.ok(rates.every((r) => r.prompts === config.pipeline.promptsPerIteration), `each iteration trained on its whole split: ${shown}`);
    assert.ok(rates[0].vsBase > 0.5, `iteration 1 beats the base: ${shown}`);
    assert.ok(rates[1].vsBase > rates[0].vsBase, `iteration 2 beats the base by more than iteration 1 did: ${shown}`);
    assert.ok(rates[1].vsPrevious > 0.5, `iteration 2 beats iteration 1: ${shown}`);
  });
});
