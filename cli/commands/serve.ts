/**
 * `sppo serve generator|oracle|optimizer [--port N] [--config FILE]`: serves one service on 0.0.0.0:N with health,
 * reflection and metrics, logs one structured line when ready, and shuts down gracefully on SIGTERM.
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import { DEFAULT_METRICS_PORTS, DEFAULT_SERVICE_PORTS, SERVICE_NAMES, type ServiceName } from "../../lib/config/default-ports.js";
import type { Config } from "../../lib/config/schema.js";

export function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(`not a port number: ${value}`);
  return port;
}

/** The ports `sppo serve NAME` binds: the config's (flags included) where set, else the service's own defaults. */
export function servePorts(name: ServiceName, config: Config): { port: number; metricsPort: number } {
  return { port: config.server.port ?? DEFAULT_SERVICE_PORTS[name], metricsPort: config.server.metricsPort ?? DEFAULT_METRICS_PORTS[name] };
}

export function register(program: Command): void {
  program
    .command("serve")
    .description("serve one service (gRPC with health checks and reflection, Prometheus /metrics)")
    .addArgument(program.createArgument("<service>", "the service to serve").choices(SERVICE_NAMES))
    .option("--port <n>", "gRPC port on 0.0.0.0 (default: generator 50051, oracle 50052, optimizer 50053; 0 = any free)", parsePort)
    .option("--config <file>", "YAML or JSON config file")
    .addOption(
      new Option("--metrics-port <n>", "Prometheus /metrics port (default: generator 9464, oracle 9465, optimizer 9466; 0 = any free, -1 = off)").argParser((v) =>
        v === "-1" ? -1 : parsePort(v),
      ),
    )
    .action(async (name: ServiceName, flags: { port?: number; config?: string; metricsPort?: number }) => {
      const [{ loadConfig }, { installShutdownSignals, serve }, { log }, { serviceFactories }] = await Promise.all([
        import("../../lib/config/load.js"),
        import("../../lib/grpc/serve.js"),
        import("../../lib/log.js"),
        import("../../services/index.js"),
      ]);
      const config = loadConfig({
        file: flags.config,
        overrides: { server: { port: flags.port, metricsPort: flags.metricsPort } },
      });
      const instance = await serviceFactories[name](config);
      let markStopped = () => {};
      const stopped = new Promise<void>((resolve) => {
        markStopped = resolve;
      });
      try {
        const running = await serve({
          name,
          services: instance.services,
          config: { ...config.server, ...servePorts(name, config) },
          onStopped: markStopped,
          settings: { port: "server.port or --port (0 = any free port)", metricsPort: "server.metricsPort or --metrics-port (0 = any free port, -1 = off)" },
        });
        installShutdownSignals(running);
      } catch (err) {
        await instance.close();
        throw err;
      }
      await stopped;
      await instance.close();
      log.info({ service: name }, "exited");
    });
}
