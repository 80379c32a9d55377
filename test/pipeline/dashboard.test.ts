/**
 * The live dashboard in a real browser: `sppo run` (a real process, the embedded default task made small) prints
 * `dashboard: URL`; Debian's chromium, driven by playwright-core, opens it and sees the charts and the preference
 * matrix change while the run goes, then the run's final numbers (summary.json, metrics.jsonl) once it ends.
 * The run's oracle is the default task's (assets/oracle), served by this test behind a gate: the run cannot get past
 * the start of its 2nd, then its 3rd iteration's comparisons before the page has shown the state before it, however
 * fast the run and however slow the browser.
 * `sppo dashboard ADDR` follows the same run through its Telemetry/Watch stream and its page ends on the same
 * numbers. A screenshot of the final page is saved as a test artifact (test-artifacts/dashboard.png; the README's
 * picture is this file). Skipped, saying why, where no chromium is installed (`.ci/run` installs it).
 * Run: node --import tsx --test test/pipeline/dashboard.test.ts
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { after, describe, it } from "node:test";
import { type Browser, chromium, type Page } from "playwright-core";
import { createOracle } from "../../services/oracle/create-oracle.js";
import type { Oracle } from "../../services/oracle/oracle.js";
import { root } from "../cli/processes.js";
import { oracleConfig, serveOracle } from "../services/oracle/fixtures.js";

const CHROMIUM = [process.env.SPPO_CHROMIUM, "/usr/bin/chromium", "/usr/bin/chromium-browser"].find((path): path is string => path !== undefined && existsSync(path));
const artifacts = join(root, "test-artifacts");

/** The run: the embedded default task, 3 iterations of 12 prompts, small batches so that each iteration trains a few steps. */
const RUN_ENV = {
  SPPO_PIPELINE__PROMPTS_PER_ITERATION: "12",
  SPPO_PIPELINE__EVAL_PROMPTS: "6",
  SPPO_PIPELINE__EVAL_SAMPLES: "2",
  SPPO_OPTIMIZER__BATCH_SIZE: "4",
  SPPO_SERVER__METRICS_PORT: "-1",
  SPPO_LOG_LEVEL: "info",
};

/** A port free right now (the OS picks it): `sppo dashboard` must be told the loop's telemetry address. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The K of the compare stage's requests (pipeline.samplesPerPrompt); evaluation's have other Ks (versions × samples). */
const K = 5;
const PROMPTS_PER_ITERATION = Number(RUN_ENV.SPPO_PIPELINE__PROMPTS_PER_ITERATION);

interface Gate {
  /** Resolves when the run has sent the request the gate holds. */
  reached: Promise<void>;
  release(): void;
}

/**
 * `inner`, except that each gate made by `holdFrom(n)` holds the n-th compare-stage request (K candidates) and every
 * later one until it is released: the run waits there (its requests are only late, not lost or failed).
 */
function gatedOracle(inner: Oracle) {
  let seen = 0;
  const gates: { from: number; reached: () => void; released: Promise<void> }[] = [];
  const oracle: Oracle = {
    async compare(prompt, candidates) {
      if (candidates.length === K) {
        const index = ++seen;
        for (const gate of gates.filter((g) => index >= g.from)) {
          gate.reached();
          await gate.released;
        }
      }
      return inner.compare(prompt, candidates);
    },
    describe: () => inner.describe(),
    close: () => inner.close(),
  };
  const holdFrom = (from: number): Gate => {
    let reached = () => {};
    let release = () => {};
    const gate = { from, reached: () => reached(), released: new Promise<void>((resolve) => (release = resolve)) };
    gates.push(gate);
    return { reached: new Promise<void>((resolve) => (reached = resolve)), release };
  };
  return { oracle, holdFrom };
}

const children: ChildProcess[] = [];
let browser: Browser | undefined;
const stops: (() => Promise<void>)[] = [];
after(async () => {
  await browser?.close();
  for (const child of children) if (child.exitCode === null) child.kill("SIGTERM");
  for (const stop of stops) await stop();
});

/** Spawns `sppo ARGS`; `lines` collects stdout and stderr lines, `waitFor(re)` resolves with the first match. */
function sppo(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, ["bin/sppo.mjs", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  children.push(child);
  const lines: string[] = [];
  const waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on("line", (line) => {
      lines.push(line);
      for (const w of [...waiters]) {
        const m = line.match(w.re);
        if (m) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    });
  }
  const waitFor = (re: RegExp) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const seen = lines.map((l) => l.match(re)).find(Boolean);
      if (seen) return resolve(seen);
      waiters.push({ re, resolve });
      void exited.then((code) => reject(new Error(`sppo ${args[0]} exited (${code}) before printing ${re}:\n${lines.join("\n")}`)));
    });
  return { child, lines, exited, waitFor };
}

async function newPage(b: Browser): Promise<Page> {
  const page = await b.newPage({ viewport: { width: 1400, height: 900 } });
  // Generous limits for every navigation and wait (playwright's default is 30 s): a loaded 2-core CI box is slow.
  page.setDefaultTimeout(120_000);
  // tsx compiles this file keeping function names through a `__name` helper, which the functions sent to the
  // page (page.evaluate) then call: give the page one.
  await page.addInitScript("globalThis.__name = (fn) => fn");
  return page;
}

/** What the page shows, read from its DOM. */
interface Shown {
  ended: boolean;
  status: string;
  events: number;
  lossPoints: number;
  deltaPoints: number;
  winratePoints: number;
  judged: string[];
  matrix: number[];
  winRates: { iteration: number; vsBase: number; vsPrevious: number; text: string[] }[];
  latestLoss: number;
  stages: string[];
  health: string[];
}

function shown(page: Page): Promise<Shown> {
  return page.evaluate(() => {
    const points = (id: string) => Number(document.getElementById(id)?.dataset.points ?? 0);
    const first = document.querySelector(".judged-set");
    return {
      ended: document.body.dataset.ended === "true",
      status: document.getElementById("status")?.dataset.state ?? "",
      events: Number(document.body.dataset.events ?? 0),
      lossPoints: points("chart-loss"),
      deltaPoints: points("chart-delta"),
      winratePoints: points("chart-winrate"),
      judged: [...document.querySelectorAll<HTMLElement>(".judged-set")].map((e) => `${e.dataset.iteration}/${e.dataset.promptId}`),
      matrix: first ? [...first.querySelectorAll<HTMLElement>("td.p")].map((td) => Number(td.dataset.value)) : [],
      winRates: [...document.querySelectorAll<HTMLElement>("#winrates tbody tr")].map((tr) => {
        const cells = [...tr.querySelectorAll<HTMLElement>("td")];
        return { iteration: Number(tr.dataset.iteration), vsBase: Number(cells[2].dataset.value), vsPrevious: Number(cells[3].dataset.value), text: [cells[2].textContent ?? "", cells[3].textContent ?? ""] };
      }),
      latestLoss: Number(document.getElementById("loss-latest")?.dataset.value || Number.NaN),
      stages: [...document.querySelectorAll<HTMLElement>("#stages tbody tr")].map((tr) => tr.dataset.stage ?? ""),
      health: [...document.querySelectorAll<HTMLElement>("#health li[data-service]")].map((li) => `${li.dataset.service}:${li.dataset.state}`),
    };
  });
}

describe("the live dashboard in a real browser", { skip: CHROMIUM ? false : "no chromium found: install Debian's chromium (apt-get install chromium; .ci/run does) to run this test" }, () => {
  it("shows a run's charts and preference matrices while it runs, and its final numbers when it ends", async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
    const out = join(mkdtempSync(join(tmpdir(), "sppo-dashboard-")), "run");
    const telemetryPort = await freePort();
    // The default task's oracle behind the gates: held from iteration 2's first comparison, then iteration 3's.
    const { oracle, holdFrom } = gatedOracle(await createOracle(oracleConfig({ backend: "pairwise-onnx", modelDir: join(root, "assets/oracle") })));
    const iteration2 = holdFrom(PROMPTS_PER_ITERATION + 1);
    const iteration3 = holdFrom(2 * PROMPTS_PER_ITERATION + 1);
    const served = await serveOracle(oracle);
    stops.push(async () => {
      iteration2.release();
      iteration3.release();
      await served.stop();
      await oracle.close();
    });
    const run = sppo(["run", "--out", out, "--iterations", "3", "--log-format", "pretty", "--oracle", `127.0.0.1:${served.running.port}`], {
      ...RUN_ENV,
      SPPO_PIPELINE__TELEMETRY_PORT: String(telemetryPort),
    });
    const [, url] = await run.waitFor(/^dashboard: (http:\/\/127\.0\.0\.1:\d+\/)$/);
    const page = await newPage(browser);
    await page.goto(url);

    // `sppo dashboard` on the loop's telemetry address serves the same page for the same run.
    const follower = sppo(["dashboard", `127.0.0.1:${telemetryPort}`, "--port", "0"]);
    const [, followerUrl] = await follower.waitFor(/^dashboard: (http:\/\/127\.0\.0\.1:\d+\/)$/);
    const followerPage = await newPage(browser);
    await followerPage.goto(followerUrl);

    // While the run goes (held at iteration 2's comparisons): a judged set with its K×K matrix and some training
    // steps, then (held at iteration 3's) more of both.
    await Promise.race([iteration2.reached, run.exited.then((code) => assert.fail(`sppo run exited (${code}) before iteration 2's comparisons:\n${run.lines.join("\n")}`))]);
    await page.waitForFunction(() => document.querySelector(".judged-set td.p") !== null && Number(document.getElementById("chart-loss")?.dataset.points) > 0, undefined, { timeout: 120_000 });
    const early = await shown(page);
    iteration2.release();
    assert.equal(early.ended, false, "the page saw the run before it ended");
    assert.equal(early.status, "running");
    assert.deepEqual(early.stages, ["generate", "compare", "train", "evaluate"]);
    assert.equal(early.matrix.length, 25, "K = 5: a 5×5 matrix");
    for (let i = 0; i < 5; i++) assert.equal(early.matrix[i * 5 + i], 0.5, "P_ii = ½");
    await page.waitForFunction(
      (before) => {
        const points = Number(document.getElementById("chart-loss")?.dataset.points);
        const judged = [...document.querySelectorAll<HTMLElement>(".judged-set")].map((e) => `${e.dataset.iteration}/${e.dataset.promptId}`);
        return points > before.lossPoints && judged[0] !== before.judged[0];
      },
      early,
      { timeout: 120_000 },
    );
    const later = await shown(page);
    iteration3.release();
    assert.equal(later.ended, false, "the charts and the matrix changed while the run was still going");
    assert.ok(later.events > early.events);

    // The end: the run exits 0 and both pages show its final numbers.
    assert.equal(await run.exited, 0, run.lines.join("\n"));
    // The terminal got readable lines and the results table; the JSON logs went to run.log.
    assert.deepEqual(run.lines.filter((l) => l.includes('"level":')), [], "no JSON log line on the terminal");
    for (const i of [1, 2, 3]) assert.ok(run.lines.some((l) => l.startsWith(`iteration ${i}/3: 12 prompts · win rate vs base `)), `iteration ${i}'s line`);
    assert.ok(run.lines.includes("run done"));
    assert.ok(run.lines.some((l) => /^algorithm +iteration +prompts +win rate vs base/.test(l)), "the results table");
    const logged = readFileSync(join(out, "run.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    assert.ok(logged.some((e) => e.msg === "serving"), "run.log holds the JSON logs");
    const summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as { iterations: { iteration: number; win_rate_vs_base: number; win_rate_vs_previous: number }[] };
    const events = readFileSync(join(out, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    const steps = events.filter((e) => e.trainStep);
    const lastJudged = events.filter((e) => e.judgedSet).at(-1);
    for (const [name, p] of [["sppo run", page], ["sppo dashboard", followerPage]] as const) {
      await p.waitForFunction(() => document.body.dataset.ended === "true" && document.getElementById("status")?.dataset.state === "done", undefined, { timeout: 120_000 });
      const final = await shown(p);
      assert.deepEqual(
        final.winRates.map((r) => [r.iteration, r.vsBase, r.vsPrevious]),
        summary.iterations.map((r) => [r.iteration, r.win_rate_vs_base, r.win_rate_vs_previous]),
        `${name}: the win-rate table is summary.json's`,
      );
      for (const [i, r] of final.winRates.entries()) assert.deepEqual(r.text, [summary.iterations[i].win_rate_vs_base.toFixed(3), summary.iterations[i].win_rate_vs_previous.toFixed(3)]);
      assert.equal(final.winratePoints, summary.iterations.length + 1, `${name}: the base at 0, then each iteration`);
      assert.equal(final.lossPoints, steps.length, `${name}: one loss point per training step`);
      assert.equal(final.deltaPoints, steps.length);
      assert.equal(final.latestLoss, steps.at(-1).trainStep.loss, `${name}: the last loss`);
      assert.equal(final.judged[0], `${lastJudged.iteration}/${lastJudged.judgedSet.promptId}`, `${name}: the latest judged prompt first`);
      assert.deepEqual(final.matrix, lastJudged.judgedSet.preferences, `${name}: its matrix, as the oracle answered it`);
      assert.deepEqual(final.health.sort(), ["generator:serving", "optimizer:serving", "oracle:serving"]);
    }

    mkdirSync(artifacts, { recursive: true });
    const screenshot = join(artifacts, "dashboard.png");
    // The stages, services, charts and the first rows of prompts: the README's picture, kept small.
    await page.screenshot({ path: screenshot, fullPage: true, clip: { x: 0, y: 0, width: 1400, height: 1240 } });
    assert.ok(readFileSync(screenshot).length > 10_000, "a screenshot with something in it");
    follower.child.kill("SIGINT");
    assert.equal(await follower.exited, 0, follower.lines.join("\n"));
  });
});
