/**
 * What `sppo run --log-format pretty` shows: on a terminal, bars for the current iteration's stages and one line per
 * iteration, none lost when the bars stop (the last iteration's line and "run done" once were); elsewhere only the
 * lines. `--log-format` defaults to pretty on a terminal and JSON elsewhere.
 * Run: node --import tsx --test test/pipeline/progress.test.ts
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PassThrough } from "node:stream";
import { logFormatOf } from "../../cli/commands/run.js";
import { RunState, ServingState, Stage } from "../../gen/sppo/v1/telemetry_pb.js";
import { showProgress } from "../../pipeline/progress.js";
import { TelemetryHub } from "../../pipeline/telemetry.js";

/** A stream that says it is (or is not) a terminal and keeps what is written to it. */
function screen(tty: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  const stream = Object.assign(new PassThrough(), { isTTY: tty, columns: 140, rows: 40 }) as unknown as NodeJS.WriteStream;
  let out = "";
  stream.on("data", (d) => (out += d));
  return { stream, text: () => out };
}

/** Two iterations of events, as the loop emits them. */
function play(hub: TelemetryHub): void {
  hub.emit({ payload: { case: "runPlan", value: { algorithm: "sppo", iterations: 2, promptsPerIteration: [3, 3], samplesPerPrompt: 5, eta: 5, evalPrompts: 2 } } });
  hub.emit({ payload: { case: "runStatus", value: { state: RunState.STARTING, message: "8 prompts from p.jsonl" } } });
  hub.emit({ payload: { case: "serviceHealth", value: { service: "oracle", address: "127.0.0.1:1", state: ServingState.SERVING } } });
  for (const iteration of [1, 2]) {
    for (let done = 1; done <= 3; done++) {
      hub.emit({ iteration, payload: { case: "progress", value: { stage: Stage.GENERATE, done, total: 3, rate: 2, tokens: BigInt(40 * done), tokensPerSecond: 80 } } });
      hub.emit({ iteration, payload: { case: "progress", value: { stage: Stage.COMPARE, done, total: 3, rate: 2 } } });
    }
    hub.emit({ iteration, payload: { case: "trainStep", value: { step: BigInt(iteration), loss: 1.5 / iteration, tokensPerSecond: 6000, examplesPerSecond: 10 } } });
    hub.emit({ iteration, payload: { case: "progress", value: { stage: Stage.EVALUATE, done: 2, total: 2, rate: 4 } } });
    if (iteration === 2) hub.emit({ payload: { case: "serviceHealth", value: { service: "oracle", address: "127.0.0.1:1", state: ServingState.UNREACHABLE, message: "connection refused" } } });
    hub.emit({ iteration, payload: { case: "iterationSummary", value: { prompts: 3, winRateVsBase: 0.5 + 0.1 * iteration, winRateVsPrevious: 0.55, seconds: 2.5, policy: { version: iteration } } } });
  }
  hub.emit({ payload: { case: "runStatus", value: { state: RunState.DONE } } });
}

describe("the terminal view of a run", () => {
  it("on a terminal: bars per stage, then one line per iteration, and the last lines survive the end", () => {
    const hub = new TelemetryHub("r");
    const { stream, text } = screen(true);
    const stop = showProgress(hub, stream);
    play(hub);
    stop();
    const out = text();
    assert.match(out, /it2 generate +\|█+\| 3\/3 prompts/, "the bars of the iteration in progress");
    assert.match(out, /it2 compare/);
    assert.match(out, /80 tok\/s/);
    const lines = ["sppo: sppo, 2 iterations of 3/3 prompts, K = 5", "iteration 1/2: 3 prompts · win rate vs base 0.600", "oracle at 127.0.0.1:1: unreachable (connection refused)", "iteration 2/2: 3 prompts · win rate vs base 0.700 · vs previous 0.550 · last loss 0.7500 · policy v2 · 2.5 s", "run done"];
    let at = 0;
    for (const line of lines) {
      const found = out.indexOf(line, at);
      assert.ok(found >= at, `"${line}" after what came before, in:\n${JSON.stringify(out.slice(at, at + 600))}`);
      at = found;
    }
    assert.equal(out.split("iteration 2/2:").length, 2, "each iteration's line once");
    assert.doesNotMatch(out, /"level":/);
  });

  it("elsewhere: the lines only, no bars", () => {
    const hub = new TelemetryHub("r");
    const { stream, text } = screen(false);
    const stop = showProgress(hub, stream);
    play(hub);
    stop();
    const out = text();
    assert.doesNotMatch(out, /it1 generate/, "no bars");
    assert.ok(!out.includes(`${String.fromCharCode(27)}[`), "no cursor movement");
    assert.deepEqual(
      out.trim().split("\n").map((l) => l.split(":")[0]),
      ["sppo", "starting", "iteration 1/2", "oracle at 127.0.0.1", "iteration 2/2", "run done"],
    );
  });

  it("--log-format: pretty on a terminal, JSON elsewhere, unless asked", () => {
    assert.equal(logFormatOf(undefined, true), "pretty");
    assert.equal(logFormatOf(undefined, false), "json");
    assert.equal(logFormatOf("json", true), "json");
    assert.equal(logFormatOf("pretty", false), "pretty");
  });
});
