/**
 * What `sppo run` shows a person at a terminal (`--log-format pretty`): one progress bar per stage of the current
 * iteration (cli-progress) with rates and ETA, and above them one readable line per event that matters: the plan,
 * each finished iteration, a service that stops answering or comes back, the end of the run. The JSON logs go to a
 * file meanwhile (lib/log.ts logTo), so nothing else writes between the bars. On a stream that is not a terminal
 * only the lines are written.
 */
import { MultiBar, Presets, type SingleBar } from "cli-progress";
import { RunState, ServingState, Stage, type TelemetryEvent } from "../gen/sppo/v1/telemetry_pb.js";
import type { TelemetryHub } from "./telemetry.js";

const STAGES = [Stage.GENERATE, Stage.COMPARE, Stage.TRAIN, Stage.EVALUATE] as const;

/** The readable line for an event, or undefined for events shown only as bars (or not at all). */
export function progressLine(event: TelemetryEvent, state: { iterations: number; loss: Map<number, number> }): string | undefined {
  const p = event.payload;
  switch (p.case) {
    case "runPlan":
      state.iterations = p.value.iterations;
      return `sppo: ${p.value.algorithm}, ${p.value.iterations} iterations of ${p.value.promptsPerIteration.join("/")} prompts, K = ${p.value.samplesPerPrompt}, η = ${p.value.eta}, ${p.value.evalPrompts} evaluation prompts`;
    case "iterationSummary": {
      const s = p.value;
      const loss = state.loss.get(event.iteration);
      const parts = [
        `iteration ${event.iteration}${state.iterations ? `/${state.iterations}` : ""}: ${s.prompts} prompts`,
        `win rate vs base ${s.winRateVsBase.toFixed(3)}`,
        `vs previous ${s.winRateVsPrevious.toFixed(3)}`,
        ...(s.probeExploitability !== undefined ? [`probe exploitability ${s.probeExploitability.toFixed(3)}`] : []),
        ...(loss !== undefined ? [`last loss ${loss.toFixed(4)}`] : []),
        `policy v${s.policy?.version ?? "?"}`,
        `${s.seconds.toFixed(1)} s`,
      ];
      return parts.join(" · ");
    }
    case "serviceHealth": {
      const h = p.value;
      if (h.state === ServingState.SERVING) return undefined;
      const what = h.state === ServingState.UNREACHABLE ? "unreachable" : h.state === ServingState.NOT_SERVING ? "not serving" : "health unknown";
      return `${h.service} at ${h.address}: ${what}${h.message ? ` (${h.message})` : ""}`;
    }
    case "runStatus":
      if (p.value.state === RunState.FAILED) return `run failed: ${p.value.message}`;
      if (p.value.state === RunState.DONE) return "run done";
      if (p.value.state === RunState.STARTING) return `starting: ${p.value.message}`;
      return undefined;
    default:
      return undefined;
  }
}

/**
 * Shows the run's progress on `stream` until the returned function is called (which draws the bars one last time).
 * @param stream @default process.stderr
 */
export function showProgress(hub: TelemetryHub, stream: NodeJS.WriteStream = process.stderr): () => void {
  const tty = stream.isTTY === true;
  // One set of bars per iteration: cleared when the iteration ends, where its one summary line takes their place.
  let multibar: MultiBar | undefined;
  let barsIteration = 0;
  const bars = new Map<Stage, SingleBar>();
  const state = { iterations: 0, loss: new Map<number, number>(), serving: new Map<string, boolean>() };
  const line = (text: string) => {
    if (multibar) {
      multibar.log(`${text}\n`);
      multibar.update(); // draws the line now: a line still buffered when the bars stop would be lost
    } else stream.write(`${text}\n`);
  };
  const endBars = () => {
    multibar?.stop();
    multibar = undefined;
    bars.clear();
  };
  const bar = (iteration: number, stage: Stage, total: number, unit: string): SingleBar | undefined => {
    if (!tty) return undefined;
    if (iteration !== barsIteration) {
      endBars();
      barsIteration = iteration;
    }
    multibar ??= new MultiBar(
      {
        format: " {stage} |{bar}| {value}/{total} {unit} | {rate}/s | {tokens} tok/s | ETA {eta_formatted} {detail}",
        hideCursor: true,
        clearOnComplete: true,
        // Signals belong to the run (it stops cleanly on SIGINT); the bars are stopped by its `finally`.
        gracefulExit: false,
        stream,
      },
      Presets.shades_classic,
    );
    let b = bars.get(stage);
    if (!b) {
      b = multibar.create(Math.max(total, 1), 0, { stage: `it${iteration} ${Stage[stage].toLowerCase()}`.padEnd(13), unit, rate: "0.0", tokens: "-", detail: "" });
      bars.set(stage, b);
    }
    b.setTotal(Math.max(total, 1));
    return b;
  };
  const subscription = hub.events$.subscribe((event) => {
    const p = event.payload;
    if (p.case === "progress" && STAGES.includes(p.value.stage as (typeof STAGES)[number])) {
      const tokens = p.value.tokensPerSecond > 0 ? p.value.tokensPerSecond.toFixed(0) : "-";
      bar(event.iteration, p.value.stage, p.value.total, "prompts")?.update(p.value.done, { rate: p.value.rate.toFixed(1), tokens, detail: p.value.skipped ? `(${p.value.skipped} dropped)` : "" });
    } else if (p.case === "trainStep") {
      state.loss.set(event.iteration, p.value.loss);
      const step = Number(p.value.step);
      bar(event.iteration, Stage.TRAIN, step, "steps")?.update(step, { rate: p.value.examplesPerSecond.toFixed(1), tokens: p.value.tokensPerSecond.toFixed(0), detail: `loss ${p.value.loss.toFixed(4)}` });
    } else if (p.case === "serviceHealth") {
      // The first SERVING of each service is the normal start; a later one is a recovery worth a line.
      const wasDown = state.serving.get(p.value.service) === false;
      state.serving.set(p.value.service, p.value.state === ServingState.SERVING);
      if (p.value.state === ServingState.SERVING && wasDown) line(`${p.value.service} at ${p.value.address}: serving again`);
    }
    const text = progressLine(event, state);
    if (text === undefined) return;
    if (p.case === "iterationSummary" || p.case === "runStatus") endBars();
    line(text);
  });
  return () => {
    subscription.unsubscribe();
    endBars();
  };
}
