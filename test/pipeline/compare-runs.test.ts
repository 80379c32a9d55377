/**
 * `sppo compare-runs` on tiny models: 2 seeds × 2 algorithms × 1 iteration of the real loop (embedded services over
 * gRPC, the intransitive synthetic judge with probes); comparison.json's fields against the runs' own summaries, the
 * head-to-head matrix a valid preference matrix, --continue reusing finished runs, and the refusals.
 * Run: node --import tsx --test test/pipeline/compare-runs.test.ts
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Command } from "commander";
import { register } from "../../cli/commands/compare-runs.js";
import { initBackend } from "../../models/index.js";
import { type Comparison, compareRuns } from "../../pipeline/compare-runs.js";
import { seedSummary } from "../../pipeline/seed-summary.js";
import { runConfig, tinyRun } from "./fixtures.js";

const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-9, `${what}: ${a} vs ${b}`);

describe("seedSummary", () => {
  it("median (the middle two averaged for an even count), mean, range, values in seed order", () => {
    assert.deepEqual(seedSummary([0.3, 0.1, 0.2]), { median: 0.2, mean: (0.3 + 0.1 + 0.2) / 3, min: 0.1, max: 0.3, values: [0.3, 0.1, 0.2] });
    assert.deepEqual(seedSummary([4, 1, 3, 2]), { median: 2.5, mean: 2.5, min: 1, max: 4, values: [4, 1, 3, 2] });
    assert.throws(() => seedSummary([]), /no values/);
    assert.throws(() => seedSummary([1, Number.NaN]), /value 1 is not finite/);
  });
});

describe("sppo compare-runs", () => {
  it("2 seeds × sppo, dpo × 1 iteration: comparison.json's fields, a valid head-to-head matrix, the runs kept", async () => {
    await initBackend("auto"); // the fixture makes tensors: the backend must be ready first
    const { policy, prompts, outDir } = tinyRun("sppo-compare-runs-", 5, Array.from({ length: 14 }, (_, i) => `tell me about the ${i % 2 ? "cat" : "dog"}`));
    const config = runConfig(policy, "synthetic-intransitive", {
      prompts,
      iterations: 3, // the comparison's --iterations overrides it
      evalPrompts: 4,
      evalSamples: 2,
      samplesPerPrompt: 3,
      maxNewTokens: 6,
      telemetryPort: 0,
      progress: false,
      seed: 10,
      probes: ["the cat is kind", "the dog is fast", "the cat is dull"],
    });
    const options = { config, outDir, seeds: 2, algorithms: ["sppo", "dpo"] as const, iterations: 1 };
    const result = await compareRuns({ ...options, algorithms: [...options.algorithms] });

    const file = JSON.parse(readFileSync(join(outDir, "comparison.json"), "utf8")) as Comparison;
    assert.deepEqual(file, JSON.parse(JSON.stringify(result)));
    assert.deepEqual(file.seeds, [10, 11], "seed i runs with pipeline.seed + i");
    assert.deepEqual(file.optimizer_seeds, [config.optimizer.seed, config.optimizer.seed + 1]);
    assert.deepEqual(Object.keys(file.algorithms), ["sppo", "dpo"]);
    for (const algorithm of ["sppo", "dpo"]) {
      const { iterations } = file.algorithms[algorithm];
      assert.equal(iterations.length, 1);
      assert.equal(iterations[0].iteration, 1);
      for (const key of ["win_rate_vs_base", "win_rate_vs_previous", "probe_exploitability"] as const) {
        const s = iterations[0][key];
        assert.ok(s, `${algorithm} ${key}`);
        assert.deepEqual(Object.keys(s).sort(), ["max", "mean", "median", "min", "values"]);
        // Each seed's value is what that run's own summary.json reports.
        const own = file.seeds.map((seed) => JSON.parse(readFileSync(join(outDir, `seed-${seed}`, algorithm, "summary.json"), "utf8")).iterations[0][key]);
        assert.deepEqual(s.values, own, `${algorithm} ${key} values`);
        close(s.median, (own[0] + own[1]) / 2, `${algorithm} ${key} median of two`);
        close(s.mean, (own[0] + own[1]) / 2, `${algorithm} ${key} mean`);
        assert.equal(s.min, Math.min(...own));
        assert.equal(s.max, Math.max(...own));
      }
      assert.deepEqual(file.algorithms[algorithm].runs, [`seed-10/${algorithm}`, `seed-11/${algorithm}`]);
    }
    // The two algorithms of a seed start from the same base with the same seeds: different losses, different policies.
    const sha = (seed: number, algorithm: string) => JSON.parse(readFileSync(join(outDir, `seed-${seed}`, algorithm, "summary.json"), "utf8")).iterations[0].policySha256;
    assert.notEqual(sha(10, "sppo"), sha(10, "dpo"));
    assert.ok(file.base && file.base.probe_exploitability.values.length === 2, "the base's probe exploitability per seed");
    // The average policy of iteration 1 mixes the base and π_1: max over probes of the two win rates' mean, − ½.
    for (const algorithm of ["sppo", "dpo"]) {
      const expected = file.seeds.map((seed, s) => {
        const own = JSON.parse(readFileSync(join(outDir, `seed-${seed}`, algorithm, "summary.json"), "utf8")).iterations[0].probe_win_rates as number[];
        assert.equal(own.length, 3, "one win rate per probe");
        assert.equal(Math.max(...own) - 0.5, file.algorithms[algorithm].iterations[0].probe_exploitability?.values[s]);
        return Math.max(...own.map((p, r) => (p + file.base!.probe_win_rates[s][r]) / 2)) - 0.5;
      });
      const got = file.algorithms[algorithm].iterations[0].average_policy_probe_exploitability?.values ?? [];
      for (let s = 0; s < 2; s++) close(got[s], expected[s], `${algorithm} seed ${s}: average policy's probe exploitability`);
    }
    for (const rates of file.base.probe_win_rates) close(Math.max(...rates) - 0.5, file.base.probe_exploitability.values[file.base.probe_win_rates.indexOf(rates)], "base");

    const h = file.head_to_head;
    assert.deepEqual(h.order, ["sppo", "dpo"]);
    assert.equal(h.per_seed.length, 2);
    for (const matrix of [h.matrix, ...h.per_seed]) {
      assert.equal(matrix.length, 2);
      for (let i = 0; i < 2; i++) {
        assert.equal(matrix[i].length, 2);
        assert.equal(matrix[i][i], 0.5);
        for (let j = 0; j < 2; j++) {
          assert.ok(matrix[i][j] >= 0 && matrix[i][j] <= 1, `P[${i}][${j}] = ${matrix[i][j]}`);
          close(matrix[i][j] + matrix[j][i], 1, `P[${i}][${j}] + P[${j}][${i}]`);
        }
      }
    }
    close(h.matrix[0][1], (h.per_seed[0][0][1] + h.per_seed[1][0][1]) / 2, "the matrix is the mean over seeds");
    assert.ok(h.comparisons.every((n, i) => n + h.skipped[i] === 4 * 2), "4 held-out prompts × 2 samples per seed, judged or refused");

    const html = readFileSync(join(outDir, "comparison.html"), "utf8");
    assert.match(html, /<svg/);
    assert.match(html, /Head to head/);
    assert.match(html, /Probe exploitability/);
    for (const seed of [10, 11]) for (const algorithm of ["sppo", "dpo"]) assert.ok(existsSync(join(outDir, `seed-${seed}`, algorithm, "report.html")));

    // --continue reuses the finished runs (same settings): the same per-seed values, no run again.
    const before = readFileSync(join(outDir, "seed-10", "sppo", "metrics.jsonl"), "utf8");
    const again = await compareRuns({ ...options, algorithms: [...options.algorithms], continue: true });
    assert.deepEqual(again.algorithms, file.algorithms);
    assert.equal(readFileSync(join(outDir, "seed-10", "sppo", "metrics.jsonl"), "utf8"), before, "the finished run was not run again");

    // A changed setting under --continue, and an unfinished run without it, are refused before anything runs.
    await assert.rejects(
      compareRuns({ ...options, algorithms: ["sppo"], continue: true, config: { ...config, optimizer: { ...config.optimizer, learningRate: 0.5 } } }),
      /--continue: .*seed-10\/sppo: the configuration changed.*\n {2}optimizer\.learningRate: 0\.001 → 0\.5/s,
    );
    const summaryPath = join(outDir, "seed-11", "dpo", "summary.json");
    writeFileSync(summaryPath, JSON.stringify({ ...JSON.parse(readFileSync(summaryPath, "utf8")), iterations: [] }));
    await assert.rejects(compareRuns({ ...options, algorithms: [...options.algorithms] }), /seed-11\/dpo holds an unfinished run of this comparison: add --continue/);
  });

  it("--algorithms names known losses, once each", async () => {
    const program = new Command("sppo").exitOverride().configureOutput({ writeErr: () => {} });
    register(program);
    for (const [value, message] of [
      ["sppo,pdo", /unknown algorithm "pdo" \(known: sppo, sppo_hard, dpo, ipo\)/],
      ["dpo,dpo", /an algorithm is named twice in "dpo,dpo"/],
    ] as const) {
      await assert.rejects(program.parseAsync(["node", "sppo", "compare-runs", "--algorithms", value]), (err: Error) => message.test(err.message));
    }
  });
});
