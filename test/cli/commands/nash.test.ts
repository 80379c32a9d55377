/** `sppo nash` end to end in-process (run: node --import tsx --test test/cli/commands/nash.test.ts). */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { register } from "../../../cli/commands/nash.js";
import { runNash } from "../../../cli/run-nash.js";

const example = (name: string) => fileURLToPath(new URL(`../../../examples/nash/${name}`, import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "sppo-nash-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `sppo nash ...args` through commander and returns what it printed. */
async function cli(args: string[]): Promise<string> {
  const program = new Command("sppo").exitOverride();
  register(program);
  const chunks: string[] = [];
  const write = process.stdout.write;
  // The command prints strings; the test runner reports to its parent process in Buffers on the same stdout, and does
  // so whenever the action awaits (it loads its modules when it runs): those pass through.
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
    if (typeof chunk !== "string") return write.call(process.stdout, chunk, ...rest);
    chunks.push(chunk);
    return true;
  }) as typeof process.stdout.write;
  try {
    await program.parseAsync(["node", "sppo", "nash", ...args]);
  } finally {
    process.stdout.write = write;
  }
  return chunks.join("");
}

describe("sppo nash", () => {
  test("--json prints the report and the plot is written where --plot says", async () => {
    const plot = join(dir, "rps.svg");
    const out = await cli(["--matrix", example("rps.json"), "--iterations", "1000", "--json", "--plot", plot]);
    const report = JSON.parse(out);
    assert.deepEqual(report.actions, ["rock", "paper", "scissors"]);
    assert.equal(report.average_policy.length, 3);
    assert.ok(Math.abs(report.average_policy.reduce((a: number, b: number) => a + b) - 1) < 1e-9);
    assert.ok(report.exploitability > 0 && report.exploitability < 0.03, `exploitability ${report.exploitability}`);
    assert.ok(report.exploitability <= report.hedge_bound);
    assert.equal(report.trace.at(-1).t, 1000);
    assert.equal(report.trace[0].exploitability, 0.25, "π_1 = (0.6, 0.3, 0.1): paper beats it with 0.6 + 0.3·½ = 0.75");
    assert.ok(typeof report.sampled.exploitability === "number");
    assert.equal(report.eta, Math.sqrt((8 * Math.log(3)) / 1000));
    // Separate runs per horizon, each with η = √(8 ln 3 / T): below Hedge's bound, and falling like 1/√T.
    assert.deepEqual(report.sweep.map((p: { T: number }) => p.T), [10, 30, 100, 300, 1000]);
    for (const p of report.sweep) assert.ok(p.exploitability <= p.hedge_bound && p.exploitability * Math.sqrt(p.T) < 1.2, `T=${p.T}`);
    assert.equal(report.sweep.at(-1).exploitability, report.exploitability);
    assert.equal(report.plot, plot);
    const svg = readFileSync(plot, "utf8");
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.match(svg, /SPPO exact \(MW\)/);
    assert.ok((svg.match(/<path /g) ?? []).length >= 3);
    assert.match(svg, /<\/svg>\n$/);
  });

  test("--algorithm ipo reports the baseline with SPPO beside it; --eta overrides the default", async () => {
    const { report, svg } = runNash({
      matrix: example("rps-weighted.json"),
      iterations: 500,
      eta: 0.1,
      algorithm: "ipo",
      samples: 5,
      seed: 1,
      innerSteps: 50,
      json: true,
    });
    assert.equal(report.eta, 0.1);
    assert.equal(report.algorithm, "ipo");
    const sppo = report.sppo as { exploitability: number };
    assert.ok((report.exploitability as number) > 3 * sppo.exploitability, `ipo ${report.exploitability} vs sppo ${sppo.exploitability}`);
    assert.match(svg, /iterative IPO/);
  });

  test("writes no file unless --plot names one", async () => {
    const cwd = process.cwd();
    const here = join(dir, "cwd");
    mkdirSync(here);
    process.chdir(here);
    try {
      const out = await cli(["--matrix", example("rps.json"), "--iterations", "100"]);
      assert.match(out, /exploitability/);
      assert.doesNotMatch(out, /plot:/);
    } finally {
      process.chdir(cwd);
    }
    assert.deepEqual(readdirSync(here), [], "nothing written into the working directory");
    await assert.rejects(cli(["--matrix", example("rps.json"), "--iterations", "10", "--plot", join(dir, "no-such-dir", "x.svg")]), /--plot .*x\.svg: cannot write it \(ENOENT\)/);
  });

  test("a bad matrix fails with the entry named", async () => {
    const bad = join(dir, "bad.json");
    writeFileSync(bad, JSON.stringify({ actions: ["a", "b"], P: [[0.5, 0.6], [0.6, 0.5]] }));
    await assert.rejects(cli(["--matrix", bad, "--iterations", "10", "--no-plot"]), /P\[0\]\[1\] \+ P\[1\]\[0\] \(a vs b\) must be 1/);
    writeFileSync(bad, "{not json");
    await assert.rejects(cli(["--matrix", bad, "--iterations", "10", "--no-plot"]), /cannot read it as JSON/);
  });
});
