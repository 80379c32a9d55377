/**
 * The loop's telemetry: one event schema (sppo.v1.TelemetryEvent) for every stage. Events go to a hub that keeps
 * the newest of them (a bounded history, for Watch's include_history) and fans them out to the sinks: metrics.jsonl,
 * the sppo.v1.Telemetry/Watch stream, Prometheus gauges and the terminal progress bars.
 */
import { appendFile } from "node:fs/promises";
import { create, type MessageInitShape, toJsonString } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Subject } from "rxjs";
import { RunState, Stage, type TelemetryEvent, TelemetryEventSchema, type Telemetry } from "../gen/sppo/v1/telemetry_pb.js";
import type { ServiceImplementation } from "../lib/grpc/implementation.js";
import { Gauge } from "prom-client";
import { log } from "../lib/log.js";
import { metricsRegistry } from "../lib/metrics.js";
import { AsyncQueue } from "../lib/streams/async-queue.js";

export interface TelemetryHubOptions {
  /** Events kept in memory for Watch's include_history (the newest ones); 0 keeps none. @default 10 000 */
  historyEvents?: number;
}

/** Default of pipeline.telemetryHistoryEvents. */
export const DEFAULT_HISTORY_EVENTS = 10_000;

/**
 * Where events meet their sinks. Subscribe to `events$` for every event from now on; `history` holds the newest
 * `historyEvents` already emitted (older ones are in metrics.jsonl), so memory stays flat however long the run.
 */
export class TelemetryHub {
  readonly events$ = new Subject<TelemetryEvent>();
  /** Ring buffer of the kept events: `next` is where the next one goes once it is full. */
  private readonly kept: TelemetryEvent[] = [];
  private next = 0;
  private total = 0;
  readonly historyEvents: number;

  constructor(
    readonly runId: string,
    readonly source = "pipeline",
    options: TelemetryHubOptions = {},
  ) {
    const limit = options.historyEvents ?? DEFAULT_HISTORY_EVENTS;
    if (!Number.isInteger(limit) || limit < 0) throw new TypeError(`historyEvents must be an integer ≥ 0, got ${limit}`);
    this.historyEvents = limit;
  }

  /** The kept events, oldest first: the last `historyEvents` emitted. */
  get history(): readonly TelemetryEvent[] {
    return this.kept.length < this.historyEvents ? [...this.kept] : [...this.kept.slice(this.next), ...this.kept.slice(0, this.next)];
  }

  /** Events emitted so far (kept or not). */
  get emitted(): number {
    return this.total;
  }

  /** Records an event (time, run id and source filled in unless given) and passes it to every sink. */
  emit(init: MessageInitShape<typeof TelemetryEventSchema> | TelemetryEvent): TelemetryEvent {
    const event = create(TelemetryEventSchema, init as MessageInitShape<typeof TelemetryEventSchema>);
    event.time ??= timestampFromMs(Date.now());
    event.runId ||= this.runId;
    event.source ||= this.source;
    this.keep(event);
    this.total++;
    this.events$.next(event);
    return event;
  }

  private keep(event: TelemetryEvent): void {
    if (this.historyEvents === 0) return;
    if (this.kept.length < this.historyEvents) {
      this.kept.push(event);
      return;
    }
    this.kept[this.next] = event;
    this.next = (this.next + 1) % this.historyEvents;
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

/** A sink that appends to a file without blocking the loop; see `writeJsonl`. */
export interface JsonlWriter {
  /** Resolves once every event emitted so far is in the file. */
  flush(): Promise<void>;
  /** Stops following the hub, then flushes. */
  close(): Promise<void>;
  /** Bytes waiting to be written (for tests and logs). */
  readonly pendingBytes: number;
}

/**
 * Appends each event to `path` as one protobuf-JSON line, asynchronously and in emission order: lines gather while
 * one write is in flight and go out together in the next, so a slow disk costs batching, never a stalled loop.
 * A failed write is logged and the lines it held are given up (the run goes on; metrics.jsonl has a gap).
 */
export function writeJsonl(hub: TelemetryHub, path: string): JsonlWriter {
  let waiting: string[] = [];
  let pendingBytes = 0;
  let writing: Promise<void> | undefined;
  const drain = async () => {
    while (waiting.length > 0) {
      const chunk = waiting.join("");
      waiting = [];
      try {
        await appendFile(path, chunk);
      } catch (err) {
        log.error({ path, err: (err as Error).message }, "metrics.jsonl: a write failed; its events are missing from the file");
      }
      pendingBytes -= chunk.length;
    }
    writing = undefined;
  };
  const subscription = hub.events$.subscribe((event) => {
    const line = `${toJsonString(TelemetryEventSchema, event)}\n`;
    waiting.push(line);
    pendingBytes += line.length;
    writing ??= drain();
  });
  const flush = async () => {
    while (writing) await writing;
  };
  return {
    flush,
    async close() {
      subscription.unsubscribe();
      await flush();
    },
    get pendingBytes() {
      return pendingBytes;
    },
  };
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
      return `${head} run ${runStateName(p.value.state)}${p.value.message ? `: ${p.value.message}` : ""}`;
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

/** "running", "stopped", …: a RunState as a word. */
export function runStateName(state: RunState): string {
  return (RunState[state] ?? "unspecified").toLowerCase();
}
