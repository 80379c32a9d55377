/**
 * The ports each process listens on when neither its config nor its flags name one, chosen so that the three
 * `sppo serve` processes and a loop run side by side on one host with no flags. `server.port` / `--port` and
 * `server.metricsPort` / `--metrics-port` override them. Free of zod so that `sppo`'s command declarations can read
 * them without loading the config schema.
 */

/** gRPC port of each service that `sppo serve NAME` runs. */
export const DEFAULT_SERVICE_PORTS = { generator: 50051, oracle: 50052, optimizer: 50053 } as const;

/** A service that `sppo serve` runs. */
export type ServiceName = keyof typeof DEFAULT_SERVICE_PORTS;

export const SERVICE_NAMES = Object.keys(DEFAULT_SERVICE_PORTS) as ServiceName[];

/** Prometheus `/metrics` port of each process (`loop`: the loop of `sppo run`). */
export const DEFAULT_METRICS_PORTS: Readonly<Record<string, number>> = { generator: 9464, oracle: 9465, optimizer: 9466, loop: 9467 };
