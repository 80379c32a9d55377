/**
 * The loop's telemetry: one event schema (sppo.v1.TelemetryEvent) for every stage. Events go to a hub that keeps
 * the run's history and fans them out to the sinks: metrics.jsonl, the sppo.v1.Telemetry/Watch stream, Prometheus
 * gauges and the terminal progress bars.
 */
import { appendFileSync } from "node:fs";
import { create, type MessageInitShape, toJsonString } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Subject } from "rxjs";
import { Stage, type TelemetryEvent, TelemetryEventSchema, type Telemetry } from "../gen/sppo/v1/telemetry_pb.js";
import type { ServiceImplementation } from "../lib/grpc/implementation.js";
import { Gauge } from "prom-client";
import { metricsRegistry } from "../lib/metrics.js";
import { AsyncQueue } from "../lib/streams/async-queue.js";

export class TelemetryHub {
  readonly events$ = new Subject<TelemetryEvent>();
  readonly history: TelemetryEvent[] = [];

  constructor(
    readonly runId: string,
    readonly source = "pipeline",
  ) {}

  /** Records an event (time, run id and source filled in unless given) and passes it to every sink. */
  emit(init: MessageInitShape<typeof TelemetryEventSchema> | TelemetryEvent): TelemetryEvent {
    const event = create(TelemetryEventSchema, init as MessageInitShape<typeof TelemetryEventSchema>);
    event.time ??= timestampFromMs(Date.now());
    event.runId ||= this.runId;
    event.source ||= this.source;
    this.history.push(event);
    this.events$.next(event);
    return event;
  }

  /** A stage's progress in an iteration; `tokens` are the response tokens it handled so far (0: not counted). */
  progress(iteration: number, stage: Stage, done: number, total: number, startedMs: number, skipped = 0, tokens = 0): void {
    const seconds = (Date.now() - startedMs) / 1000;
    const perSecond = (n: number) => (seconds > 0 ? n / seconds : 0);
    this.emit({
      iteration,
      payload: { case: "progress", value: { stage, done, total, skipped, rate: perSecond(done), tokens: BigInt(tokens), tokensPerSecond: perSecond(tokens) } },
    });
  }

  complete(): void {
    this.events$.complete();
  }
}

/** Appends each event to `path` as one protobuf-JSON line. */
export function writeJsonl(hub: TelemetryHub, path: string): () => void {
  const subscription = hub.events$.subscribe((event) => appendFileSync(path, `${toJsonString(TelemetryEventSchema, event)}\n`));
  return () => subscription.unsubscribe();
}

/** sppo.v1.Telemetry: Watch replays the history when asked, then follows live events until the run ends. */
export function telemetryImplementation(hub: TelemetryHub): ServiceImplementation<typeof Telemetry> {
  return {
    async *watch(request, context) {
      const queue = new AsyncQueue<TelemetryEvent>();
      const subscription = hub.events$.subscribe({ next: (e) => queue.push(e), complete: () => queue.end() });
      const stop = () => queue.end();
      context.signal.addEventListener("abort", stop, { once: true });
      try {
        if (request.includeHistory) for (const event of [...hub.history]) yield { event };
        for await (const event of queue) yield { event };
      } finally {
        subscription.unsubscribe();
        context.signal.removeEventListener("abort", stop);
      }
    },
  };
}

const gauges = {
  loss: new Gauge({ name: "sppo_train_loss", help: "Loss of the last optimizer step.", registers: [metricsRegistry] }),
  gradNorm: new Gauge({ name: "sppo_train_grad_norm", help: "Gradient norm of the last optimizer step, before clipping.", registers: [metricsRegistry] }),
  tokensPerSecond: new Gauge({ name: "sppo_train_tokens_per_second", help: "Training throughput of the last step.", registers: [metricsRegistry] }),
  winRateVsBase: new Gauge({ name: "sppo_win_rate_vs_base", help: "Oracle win rate of the latest policy against the base policy.", registers: [metricsRegistry] }),
  winRateVsPrevious: new Gauge({ name: "sppo_win_rate_vs_previous", help: "Oracle win rate of the latest policy against the previous one.", registers: [metricsRegistry] }),
  iteration: new Gauge({ name: "sppo_iteration", help: "The iteration the loop is in.", registers: [metricsRegistry] }),
  stageDone: new Gauge({ name: "sppo_stage_done", help: "Items a stage has finished in the current iteration.", labelNames: ["stage"] as const, registers: [metricsRegistry] }),
};

/** Mirrors events into Prometheus gauges (served at /metrics). */
export function exportGauges(hub: TelemetryHub): () => void {
  const subscription = hub.events$.subscribe((event) => {
    gauges.iteration.set(event.iteration);
    switch (event.payload.case) {
      case "trainStep":
        gauges.loss.set(event.payload.value.loss);
        gauges.gradNorm.set(event.payload.value.gradNorm);
        gauges.tokensPerSecond.set(event.payload.value.tokensPerSecond);
        break;
      case "iterationSummary":
        gauges.winRateVsBase.set(event.payload.value.winRateVsBase);
        gauges.winRateVsPrevious.set(event.payload.value.winRateVsPrevious);
        break;
      case "progress":
        gauges.stageDone.set({ stage: Stage[event.payload.value.stage] }, event.payload.value.done);
        break;
    }
  });
  return () => subscription.unsubscribe();
}

/** One line of text for an event, for `sppo watch` and logs. */
export function describeEvent(event: TelemetryEvent): string {
  const head = `[iter ${event.iteration}] ${event.source}`;
  const p = event.payload;
  switch (p.case) {
    case "trainStep": {
      const s = p.value;
      return `${head} step ${s.step}: loss ${s.loss.toFixed(4)} Δchosen ${s.chosenDelta.toFixed(3)} Δrejected ${s.rejectedDelta.toFixed(3)} logp chosen ${s.chosenLogprob.toFixed(2)} rejected ${s.rejectedLogprob.toFixed(2)} target ${s.target.toFixed(3)} |g| ${s.gradNorm.toFixed(3)} lr ${s.learningRate.toExponential(2)} ${s.tokensPerSecond.toFixed(0)} tok/s`;
    }
    case "progress":
      return `${head} ${Stage[p.value.stage].toLowerCase()} ${p.value.done}/${p.value.total} (${p.value.rate.toFixed(1)}/s)`;
    case "iterationSummary":
      return `${head} iteration done: ${p.value.prompts} prompts, win rate vs base ${p.value.winRateVsBase.toFixed(3)}, vs previous ${p.value.winRateVsPrevious.toFixed(3)} (${p.value.seconds.toFixed(1)} s)`;
    case "policyPublished":
      return `${head} published policy v${p.value.version} (sha256 ${p.value.sha256.slice(0, 12)}…)`;
    case "runStatus":
      return `${head} run ${["unspecified", "starting", "running", "done", "failed"][p.value.state]}${p.value.message ? `: ${p.value.message}` : ""}`;
    case "judgedSet": {
      const rates = p.value.candidates.map((c) => c.winRate.toFixed(2)).join(" ");
      return `${head} judged prompt ${p.value.promptId} (policy v${p.value.policyVersion}): P̂ ${rates}`;
    }
    case "serviceHealth":
      return `${head} ${p.value.service} at ${p.value.address}: ${["unknown", "serving", "not serving", "unreachable"][p.value.state]}${p.value.message ? ` (${p.value.message})` : ""}`;
    case "runPlan":
      return `${head} plan: ${p.value.algorithm}, ${p.value.iterations} iterations of ${p.value.promptsPerIteration.join("/")} prompts, K = ${p.value.samplesPerPrompt}, η = ${p.value.eta}`;
    default:
      return `${head} (empty event)`;
  }
}
