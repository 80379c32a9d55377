/** Helpers for tests that run real gRPC servers on loopback. */
import { serverConfigSchema } from "../../../lib/config/server.js";
import { type MountedService, type RunningServer, serve } from "../../../lib/grpc/serve.js";

/** Serves `services` on 127.0.0.1 at a free port, metrics off, with short drain and grace periods. */
export function serveForTest(
  services: MountedService[],
  overrides: Partial<ReturnType<typeof serverConfigSchema.parse>> = {},
): Promise<RunningServer> {
  const config = serverConfigSchema.parse({ host: "127.0.0.1", port: 0, metricsPort: -1, drainDelayMs: 0, shutdownGraceMs: 2_000, ...overrides });
  return serve({ name: "test", services, config: { ...config, port: config.port ?? 0 } });
}

/** A promise with its resolve function, for handing control between a handler and a test. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
