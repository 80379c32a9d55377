/**
 * `sppo run`: the whole job. Without service addresses it starts the generator, the oracle and the optimizer in
 * this process on loopback (the embedded default) and drives them over gRPC exactly as it drives remote ones.
 * Writes into the output directory: summary.json, metrics.jsonl, report.html and checkpoints/.
 * With `stop` aborted (the CLI does it on SIGINT/SIGTERM) the loop stops taking prompts, the journal and a
 * checkpoint are saved, the outputs are written and flushed, and the summary says where it stopped.
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { fromJsonString } from "@bufbuild/protobuf";
import { join, resolve } from "node:path";
import { Generator } from "../gen/sppo/v1/generator_pb.js";
import { Algorithm, Optimizer } from "../gen/sppo/v1/optimizer_pb.js";
import { PreferenceOracle } from "../gen/sppo/v1/oracle_pb.js";
import { RunState, Telemetry, type TelemetryEvent, TelemetryEventSchema } from "../gen/sppo/v1/telemetry_pb.js";
import { writeFileAtomic } from "../lib/atomic.js";
import type { Config } from "../lib/config/schema.js";
import { DEFAULT_METRICS_PORTS } from "../lib/config/server.js";
import { createClient } from "../lib/grpc/client.js";
import { createInProcessClient } from "../lib/grpc/in-process.js";
import { mount, type RunningServer, serve } from "../lib/grpc/serve.js";
import { Code, kindError, RpcError } from "../lib/errors.js";
import { log, logTo } from "../lib/log.js";
import { type ServiceInstance, type ServiceName, serviceFactories } from "../services/index.js";
import { type Dashboard, serveDashboard } from "./dashboard/serve-dashboard.js";
import { type IterationResult, type LoopStop, peakRssMb, runLoop } from "./loop.js";
import { newRunId, runIdentity, trainingParams } from "./run-identity.js";
import { finishedIterations, prepareFreshOutDir, readRunState, type RunInvocation, type RunTargets, writeRunState } from "./run-state.js";
import { showProgress } from "./progress.js";
import { loadPrompts, splitPrompts } from "./prompts.js";
import { renderReport } from "./report.js";
import { watchServiceHealth } from "./service-health.js";
import { describeEvent, exportGauges, TelemetryHub, telemetryImplementation, writeJsonl } from "./telemetry.js";

const SERVICE_NAMES = ["generator", "oracle", "optimizer"] as const;
const SERVICE_TYPES: Record<ServiceName, string> = { generator: Generator.typeName, oracle: PreferenceOracle.typeName, optimizer: Optimizer.typeName };

export interface RunOptions {
  config: Config;
  /** Output directory. */
  outDir: string;
  /** Remote services by name; any subset (the others are started here, on loopback). */
  targets?: RunTargets;
  /**
   * How the loop reaches embedded services: "grpc" (loopback sockets, as remote services) or "in-process" (direct
   * calls; the optimizer is still served on loopback for the generator's weight pulls). For measuring the gRPC
   * hop; ignored with `targets`. @default "grpc"
   */
  transport?: "grpc" | "in-process";
  /** Called once the loop's telemetry service is bound (useful with telemetryPort 0). */
  onTelemetry?: (port: number) => void;
  /** Called once the dashboard is served, with its address (`dashboard: URL` is printed by the CLI from here). */
  onDashboard?: (url: string) => void;
  /**
   * "pretty": the JSON logs go to <out>/run.log and `stderr` shows progress bars and one line per iteration
   * (pipeline/progress.ts); "json": JSON logs on stderr (and, with pipeline.progress on a terminal, the bars).
   * @default "json"
   */
  logFormat?: "json" | "pretty";
  /** Continue the run in `outDir` (its summary.json, journal and checkpoints) instead of starting afresh. */
  resume?: boolean;
  /** How the run was invoked, recorded in run.json for `--resume`. @default the config as given, no file */
  invocation?: RunInvocation;
  /** Aborted to stop the run; its `reason` (e.g. "SIGINT") is recorded. */
  stop?: AbortSignal;
}

export interface RunSummary {
  algorithm: string;
  iterations: IterationResult[];
  /** With pipeline.compareAlgorithms: each other loss's iterations, from the same base, prompts and seeds. */
  comparison?: Record<string, IterationResult[]>;
  prompts: { file: string; training: number; evaluation: number };
  seconds: number;
  /** This process's peak resident memory, in MB, when the summary was written (see IterationResult.peak_rss_mb). */
  peak_rss_mb: number;
  /** Present when the run was stopped before it finished: where (`sppo run --resume` continues from there). */
  stopped?: LoopStop & { reason: string; algorithm: string };
}

const algorithms: Record<Config["optimizer"]["algorithm"], Algorithm> = {
  sppo: Algorithm.SPPO,
  sppo_hard: Algorithm.SPPO_HARD,
  dpo: Algorithm.DPO,
  ipo: Algorithm.IPO,
};

/**
 * Runs the loop with the configured loss, then (embedded services only) once more from the same base policy for
 * each of pipeline.compareAlgorithms, each into <out>/<algorithm>/; summary.json and report.html then show all.
 */
export async function runSelfPlay(options: RunOptions): Promise<RunSummary> {
  const others = options.config.pipeline.compareAlgorithms.filter((a) => a !== options.config.optimizer.algorithm);
  if (others.length > 0 && Object.keys(options.targets ?? {}).length > 0) {
    throw kindError("config", "pipeline.compareAlgorithms needs the embedded services: remote services keep their trained state");
  }
  const main = await runOne(options);
  if (others.length === 0 || main.stopped) return main;
  const comparison: Record<string, IterationResult[]> = {};
  for (const algorithm of others) {
    const config: Config = {
      ...options.config,
      optimizer: { ...options.config.optimizer, algorithm },
      pipeline: { ...options.config.pipeline, telemetryPort: -1, dashboardPort: -1, compareAlgorithms: [] },
    };
    const other = await runOne({ ...options, config, outDir: join(options.outDir, algorithm), onTelemetry: undefined, onDashboard: undefined });
    if (other.stopped) return { ...main, stopped: other.stopped };
    comparison[algorithm] = other.iterations;
  }
  const summary = { ...main, comparison };
  const outDir = resolve(options.outDir);
  writeFileAtomic(join(outDir, "summary.json"), `${JSON.stringify(summary, null, 2)}\n`);
  const events = readFileSync(join(outDir, "metrics.jsonl"), "utf8")
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => fromJsonString(TelemetryEventSchema, line));
  writeFileAtomic(
    join(outDir, "report.html"),
    renderReport({ title: `SPPO run — ${main.algorithm} against ${others.join(", ")}`, algorithm: main.algorithm, iterations: main.iterations, events, comparison }),
  );
  return summary;
}

async function runOne(options: RunOptions): Promise<RunSummary> {
  const started = Date.now();
  const outDir = resolve(options.outDir);
  const config = options.config;
  const pipeline = config.pipeline;
  // A comparison run that had not started when the run stopped starts afresh in its folder.
  const resuming = options.resume === true && existsSync(join(outDir, "run.json"));
  // The run's id: new for a new run, the recorded one for a resumed run ("" for a run recorded before run ids).
  let runId = newRunId(new Date(started));
  if (resuming) runId = readRunState(outDir).runId ?? "";
  else {
    prepareFreshOutDir(outDir);
    mkdirSync(outDir, { recursive: true });
    writeRunState(outDir, options.invocation ?? { config: "", ...(options.targets ? { targets: options.targets } : {}) }, config, runId);
  }
  mkdirSync(join(outDir, "checkpoints"), { recursive: true });
  const metricsPath = join(outDir, "metrics.jsonl");
  const finished = resuming ? finishedIterations(outDir) : [];
  const remote: Partial<Record<ServiceName, string>> = options.targets ?? {};
  const embeddedNames = SERVICE_NAMES.filter((name) => !remote[name]);
  // What the loop itself listens on stays on this host unless asked otherwise; a loop whose services are all
  // elsewhere (a cluster) listens where the servers do, so that other pods can watch it.
  const loopHost = pipeline.host ?? (embeddedNames.length > 0 ? "127.0.0.1" : config.server.host);

  const hub = new TelemetryHub(runId || `run-${new Date(started).toISOString()}`, "pipeline", { historyEvents: pipeline.telemetryHistoryEvents });
  const jsonl = writeJsonl(hub, metricsPath);
  // The report draws one point per optimizer step: it keeps those, not the hub's whole (bounded) history.
  const trainSteps: TelemetryEvent[] = [];
  const keepSteps = hub.events$.subscribe((event) => {
    if (event.payload.case === "trainStep") trainSteps.push(event);
  });
  const stopGauges = exportGauges(hub);
  const pretty = options.logFormat === "pretty";
  const stopLogFile = pretty ? logTo(join(outDir, "run.log")) : () => {};
  const stopProgress = pretty || (pipeline.progress && process.stderr.isTTY) ? showProgress(hub) : logEvents(hub);
  let stopHealth = () => {};

  const servers: RunningServer[] = [];
  const instances: ServiceInstance[] = [];
  let dashboard: Dashboard | undefined;
  try {
    // The prompts before anything starts: a wrong path or a bad row fails in a second, not after the models load.
    const prompts = await loadPrompts(pipeline.prompts);
    const splits = splitPrompts(prompts, {
      iterations: pipeline.iterations,
      perIteration: pipeline.promptsPerIteration,
      evalCount: pipeline.evalPrompts,
      seed: pipeline.seed,
    });
    // The page first, so that a person can open it while the services load.
    if (pipeline.dashboardPort >= 0) {
      dashboard = await serveDashboard({ hub, host: loopHost, port: pipeline.dashboardPort, portSetting: "pipeline.dashboardPort (0 = any free port, -1 = off)" });
      options.onDashboard?.(dashboard.url);
    }
    // The loop's own Telemetry service (and the process's /metrics).
    if (pipeline.telemetryPort >= 0) {
      servers.push(
        await serve({
          name: "telemetry",
          services: [mount(Telemetry, telemetryImplementation(hub))],
          config: {
            ...config.server,
            host: loopHost,
            port: pipeline.telemetryPort,
            metricsPort: config.server.metricsPort ?? DEFAULT_METRICS_PORTS.loop,
            drainDelayMs: 0,
            shutdownGraceMs: 1_000,
          },
          settings: { port: "pipeline.telemetryPort (0 = any free port, -1 = off)", metricsPort: "server.metricsPort (0 = any free port, -1 = off)" },
        }),
      );
      options.onTelemetry?.(servers[0].port);
      log.info({ port: servers[0].port }, "telemetry: watch with `sppo watch HOST:PORT`");
    }

    const inProcess: Partial<Record<ServiceName, ServiceInstance>> = {};
    const local: Partial<Record<ServiceName, string>> = {};
    // The services not given: each on its own loopback port, checkpoints in the output directory. The optimizer
    // resumes from the run's checkpoints only when the run is resumed. The generator pulls any version a request
    // pins that it does not hold from the optimizer (started before it), wherever that one runs.
    const embedded: Config = {
      ...config,
      optimizer: { ...config.optimizer, checkpointDir: join(outDir, "checkpoints"), policyDir: join(outDir, "policies"), resume: resuming },
    };
    for (const name of ["oracle", "optimizer", "generator"] as const) {
      if (remote[name]) continue;
      const optimizerTarget = remote.optimizer ?? local.optimizer ?? "";
      const instance = await serviceFactories[name](name === "generator" ? { ...embedded, generator: { ...embedded.generator, optimizerTarget } } : embedded);
      instances.push(instance);
      inProcess[name] = instance;
      const server = await serve({
        name,
        services: instance.services,
        config: { ...config.server, host: "127.0.0.1", port: 0, metricsPort: -1, drainDelayMs: 0, shutdownGraceMs: 2_000 },
      });
      servers.push(server);
      local[name] = `127.0.0.1:${server.port}`;
    }
    const targets = { ...local, ...remote } as Required<RunTargets>;
    stopHealth = watchServiceHealth(
      hub,
      SERVICE_NAMES.map((name) => ({ name, address: targets[name], typeName: SERVICE_TYPES[name], embedded: !remote[name] })),
      config.client,
    );

    const clientOptions = { ...config.client };
    // In-process calls for measuring the gRPC hop: only where every service is embedded.
    const direct = embeddedNames.length === 3 && options.transport === "in-process";
    const implementationOf = (name: ServiceName) => inProcess[name]!.services[0].implementation as never;
    const clients = {
      generator: direct ? createInProcessClient(Generator, implementationOf("generator")) : createClient(Generator, targets.generator, clientOptions),
      oracle: direct ? createInProcessClient(PreferenceOracle, implementationOf("oracle")) : createClient(PreferenceOracle, targets.oracle, clientOptions),
      optimizer: direct ? createInProcessClient(Optimizer, implementationOf("optimizer")) : createClient(Optimizer, targets.optimizer, clientOptions),
      optimizerTarget: targets.optimizer,
    };
    try {
      await Promise.all(
        SERVICE_NAMES.map((name) =>
          clients[name].waitForReady(pipeline.startupTimeoutMs).catch((err: Error) => {
            throw new RpcError(
              Code.UNAVAILABLE,
              `the ${name} at ${targets[name]}${remote[name] ? ` (--${name})` : ""} did not answer within ${pipeline.startupTimeoutMs / 1000} s: is it running there? (pipeline.startupTimeoutMs sets the wait)`,
              { cause: err },
            );
          }),
        ),
      );
      // The run's base is the policy the generator samples from first (its version 0); the optimizer must hold it too.
      const base = (await clients.generator.getPolicy({})).loaded.find((v) => v.version === 0);
      const run = runIdentity(runId, base?.sha256 ?? "", config, splits);
      log.info({ run: runId, fingerprint: run.fingerprint, base: run.baseSha256 }, resuming ? "continuing the run" : "a new run");
      const resumeAt = finished.length > 0 ? finished[finished.length - 1].iteration + 1 : 1;
      const resumedFrom = resuming ? ` (resumed at iteration ${resumeAt})` : "";
      hub.emit({
        payload: {
          case: "runPlan",
          value: {
            algorithm: config.optimizer.algorithm,
            iterations: splits.iterations.length,
            promptsPerIteration: splits.iterations.map((s) => s.length),
            evalPrompts: splits.evaluation.length,
            samplesPerPrompt: pipeline.samplesPerPrompt,
            eta: config.optimizer.eta,
            firstIteration: resumeAt,
          },
        },
      });
      hub.emit({ payload: { case: "runStatus", value: { state: RunState.STARTING, message: `${prompts.length} prompts from ${pipeline.prompts}${resumedFrom}` } } });

      const iterations: IterationResult[] = [...finished];
      let stopped: RunSummary["stopped"];
      const summary = (): RunSummary => ({
        algorithm: config.optimizer.algorithm,
        iterations,
        prompts: { file: pipeline.prompts, training: splits.iterations.reduce((n, s) => n + s.length, 0), evaluation: splits.evaluation.length },
        seconds: (Date.now() - started) / 1000,
        peak_rss_mb: peakRssMb(),
        ...(stopped ? { stopped } : {}),
      });
      const writeOutputs = () => {
        writeFileAtomic(join(outDir, "summary.json"), `${JSON.stringify(summary(), null, 2)}\n`);
        writeFileAtomic(join(outDir, "report.html"), renderReport({ title: `SPPO run — ${config.optimizer.algorithm}`, algorithm: config.optimizer.algorithm, iterations, events: trainSteps }));
      };
      const loop = await runLoop({
        config: pipeline,
        splits,
        clients,
        hub,
        algorithm: algorithms[config.optimizer.algorithm],
        trainingParams: trainingParams(config.optimizer),
        run,
        firstIteration: resumeAt,
        maxMessageBytes: config.client.maxMessageBytes,
        journalDir: outDir,
        ...(finished.length > 0 ? { resumeFrom: { version: finished[finished.length - 1].policyVersion, sha256: finished[finished.length - 1].policySha256 } } : {}),
        versionSha256: new Map<number, string>(([[0, run.baseSha256], ...finished.map((r) => [r.policyVersion, r.policySha256])] as [number, string][]).filter(([, sha]) => sha !== "")),
        onIteration: (result) => {
          iterations.push(result);
          writeOutputs();
        },
        stop: options.stop,
      });
      if (loop.stopped) stopped = { ...loop.stopped, reason: String(options.stop?.reason ?? "requested"), algorithm: config.optimizer.algorithm };
      writeOutputs();
      return summary();
    } finally {
      clients.generator.close();
      clients.oracle.close();
      clients.optimizer.close();
    }
  } finally {
    stopHealth();
    hub.complete();
    keepSteps.unsubscribe();
    stopProgress();
    await jsonl.close();
    stopGauges();
    await dashboard?.close();
    await Promise.all(servers.map((s) => s.shutdown()));
    for (const instance of instances) await instance.close();
    stopLogFile();
  }
}

/** Without a terminal: one log line per iteration summary, status change and every 10th training step. */
function logEvents(hub: TelemetryHub): () => void {
  const subscription = hub.events$.subscribe((event) => {
    const c = event.payload.case;
    if (c === "iterationSummary" || c === "runStatus" || c === "policyPublished" || (c === "trainStep" && event.payload.value.step % 10n === 0n)) {
      log.info({ event: c, iteration: event.iteration }, describeEvent(event));
    }
  });
  return () => subscription.unsubscribe();
}
