/**
 * The one way every service is served: typed implementations mounted on a grpc-js server together with
 * grpc.health.v1.Health (per-service status, NOT_SERVING while draining), server reflection, Prometheus metrics,
 * message-size limits, keepalive and max_connection_age, and a graceful shutdown with one owner.
 *
 * Example:
 *   const running = await serve({ name: "oracle", services: [{ service: PreferenceOracle, implementation }], config });
 *   installShutdownSignals(running);   // SIGTERM/SIGINT → running.shutdown()
 */
import * as grpc from "@grpc/grpc-js";
import type { DescService } from "@bufbuild/protobuf";
import { HealthImplementation } from "grpc-health-check";
import { setMaxListeners } from "node:events";
import type { Server as HttpServer } from "node:http";
import { DEFAULT_METRICS_PORTS, type ServerConfig } from "../config/server.js";
import { Code, RpcError } from "../errors.js";
import { log } from "../log.js";
import { grpcHandled, grpcHandlingSeconds, grpcInFlight, serveMetrics } from "../metrics.js";
import { resolveToken } from "./auth.js";
import { serviceDefinition } from "./definition.js";
import { adaptImplementation, type ServiceImplementation } from "./implementation.js";
import { addReflection } from "./reflection.js";
import "./logging.js";
import { type ServerCredentialsConfig, serverCredentials } from "./tls.js";

/** A service descriptor with its implementation. */
export interface MountedService<S extends DescService = DescService> {
  service: S;
  implementation: ServiceImplementation<S>;
}

/** Pairs a descriptor with an implementation, checking the implementation's type against the descriptor. */
export function mount<S extends DescService>(service: S, implementation: ServiceImplementation<S>): MountedService {
  return { service, implementation } as unknown as MountedService;
}

export type ServerState = "serving" | "draining" | "stopped";

export interface ServeOptions {
  /** Name for logs ("oracle"). */
  name: string;
  services: MountedService[];
  config: { port: number } & Pick<
    ServerConfig,
    | "host"
    | "metricsPort"
    | "maxMessageBytes"
    | "maxConnectionAgeMs"
    | "maxConnectionAgeGraceMs"
    | "keepaliveTimeMs"
    | "keepaliveTimeoutMs"
    | "shutdownGraceMs"
    | "drainDelayMs"
    | "authToken"
    | "authTokenFile"
  > &
    ServerCredentialsConfig;
  /** Called once the server has stopped (after shutdown). */
  onStopped?: () => void;
  /**
   * Where a person sets each port, named in the one-line error when it is taken (e.g. "server.port or --port").
   * @default "server.port (0 = any free port)" and "server.metricsPort (0 = any free port, -1 = off)"
   */
  settings?: { port?: string; metricsPort?: string };
}

/** A listen error as one line for a person: a port in use or not permitted names the setting that chooses it. */
export function bindError(what: string, address: string, setting: string, err: Error): RpcError {
  const reason = /EADDRINUSE/.test(err.message)
    ? "is in use by another process"
    : /EACCES/.test(err.message)
      ? "is not permitted (ports below 1024 need privileges)"
      : /EADDRNOTAVAIL|ENOTFOUND|EAI_AGAIN/.test(err.message)
        ? "is not an address of this host"
        : `cannot be bound (${err.message})`;
  return new RpcError(Code.FAILED_PRECONDITION, `${what}: ${address} ${reason}; choose another with ${setting}`, { cause: err });
}

export interface RunningServer {
  readonly name: string;
  /** The bound gRPC port (useful with port 0). */
  readonly port: number;
  /** The bound metrics port, or undefined when metrics are off. */
  readonly metricsPort: number | undefined;
  readonly server: grpc.Server;
  readonly health: HealthImplementation;
  state(): ServerState;
  /** Calls in progress. */
  inFlight(): number;
  /**
   * Graceful stop: health turns NOT_SERVING (calls still accepted for config.drainDelayMs), then new calls are refused, calls in progress may finish for
   * `graceMs` (default: config.shutdownGraceMs), then the rest are cancelled. Idempotent.
   */
  shutdown(graceMs?: number): Promise<void>;
}

/** Starts a server and resolves once it is bound and SERVING. */
export async function serve(options: ServeOptions): Promise<RunningServer> {
  const { config, name } = options;
  const metricsPort = config.metricsPort ?? DEFAULT_METRICS_PORTS[name] ?? -1;
  const server = new grpc.Server({
    "grpc.max_receive_message_length": config.maxMessageBytes,
    "grpc.max_send_message_length": config.maxMessageBytes,
    "grpc.max_connection_age_ms": config.maxConnectionAgeMs,
    "grpc.max_connection_age_grace_ms": config.maxConnectionAgeGraceMs,
    "grpc.keepalive_time_ms": config.keepaliveTimeMs,
    "grpc.keepalive_timeout_ms": config.keepaliveTimeoutMs,
    // Accept the clients' keepalive pings (lib/grpc/client.ts pings as often as keepaliveTimeMs).
    "grpc.http2.min_ping_interval_without_data_ms": Math.min(config.keepaliveTimeMs, 10_000),
    "grpc.keepalive_permit_without_calls": 1,
  });

  // Aborted when the grace period runs out: handlers see it through their context's signal.
  const stopController = new AbortController();
  // Every call in flight listens on it, so the default limit of 10 listeners would warn under ordinary load.
  setMaxListeners(0, stopController.signal);
  let inFlight = 0;
  let idle: (() => void) | undefined;
  const observer = {
    started(path: string) {
      inFlight++;
      grpcInFlight.inc({ method: path });
    },
    finished(path: string, code: Code, seconds: number) {
      inFlight--;
      grpcInFlight.dec({ method: path });
      grpcHandled.inc({ method: path, code: Code[code] });
      grpcHandlingSeconds.observe({ method: path }, seconds);
      if (inFlight === 0) idle?.();
    },
  };

  const authToken = resolveToken(config, "server");
  for (const { service, implementation } of options.services) {
    server.addService(serviceDefinition(service), adaptImplementation(service, implementation, observer, stopController.signal, authToken));
  }

  const statusMap: Record<string, "SERVING"> = { "": "SERVING" };
  for (const { service } of options.services) statusMap[service.typeName] = "SERVING";
  const health = new HealthImplementation(statusMap);
  health.addToServer(server);
  addReflection(
    server,
    options.services.map((s) => s.service),
  );

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${config.host}:${config.port}`, serverCredentials(config), (err, bound) => {
      // FAILED_PRECONDITION: the address is taken or not this machine's; the user picks another (one line, no stack).
      if (err) reject(bindError(`${name} gRPC port`, `${config.host}:${config.port}`, options.settings?.port ?? "server.port (0 = any free port)", err));
      else resolve(bound);
    });
  });

  let metrics: { server: HttpServer; port: number } | undefined;
  if (metricsPort >= 0) {
    try {
      metrics = await serveMetrics(config.host, metricsPort);
    } catch (err) {
      server.forceShutdown();
      throw bindError(`${name} /metrics port`, `${config.host}:${metricsPort}`, options.settings?.metricsPort ?? "server.metricsPort (0 = any free port, -1 = off)", err as Error);
    }
  }

  let state: ServerState = "serving";
  let stopping: Promise<void> | undefined;

  const shutdown = (graceMs = config.shutdownGraceMs): Promise<void> => {
    stopping ??= (async () => {
      state = "draining";
      for (const service of Object.keys(statusMap)) health.setStatus(service, "NOT_SERVING");
      log.info({ service: name, inFlight, graceMs, drainDelayMs: config.drainDelayMs }, "draining");
      if (config.drainDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, config.drainDelayMs));
      const drained = new Promise<void>((resolve) => {
        if (inFlight === 0) resolve();
        else idle = resolve;
      });
      // tryShutdown refuses new calls at once and calls back when the existing ones are done.
      const closed = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<"expired">((resolve) => {
        timer = setTimeout(() => resolve("expired"), graceMs);
      });
      const outcome = await Promise.race([Promise.all([drained, closed]), expired]);
      clearTimeout(timer);
      if (outcome === "expired") {
        log.warn({ service: name, inFlight }, "grace period over: cancelling the calls still in progress");
        stopController.abort();
        server.forceShutdown();
      }
      if (metrics) await new Promise<void>((resolve) => metrics!.server.close(() => resolve()));
      state = "stopped";
      log.info({ service: name }, "stopped");
      options.onStopped?.();
    })();
    return stopping;
  };

  log.info(
    { service: name, address: `${config.host}:${port}`, metricsPort: metrics?.port, services: options.services.map((s) => s.service.typeName) },
    "serving",
  );

  return {
    name,
    port,
    metricsPort: metrics?.port,
    server,
    health,
    state: () => state,
    inFlight: () => inFlight,
    shutdown,
  };
}

/**
 * Makes SIGTERM and SIGINT shut `running` down gracefully; the listeners are removed once it has stopped, so a
 * second signal during the grace period falls through to Node's default (immediate exit).
 */
export function installShutdownSignals(running: RunningServer): () => void {
  const onSignal = (signal: NodeJS.Signals) => {
    log.info({ service: running.name, signal }, "signal received");
    remove();
    void running.shutdown();
  };
  const remove = () => {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  return remove;
}
