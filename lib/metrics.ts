/**
 * Prometheus metrics (prom-client): one registry per process, served over HTTP at `/metrics`. Every service and
 * the loop register their own series here; the gRPC layer counts calls for all of them.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

export const metricsRegistry = new Registry();
collectDefaultMetrics({ register: metricsRegistry, prefix: "sppo_" });

export const grpcHandled = new Counter({
  name: "sppo_grpc_server_handled_total",
  help: "gRPC calls completed by the server, by method and status code.",
  labelNames: ["method", "code"] as const,
  registers: [metricsRegistry],
});

export const grpcHandlingSeconds = new Histogram({
  name: "sppo_grpc_server_handling_seconds",
  help: "Time from the start of a gRPC call to its status, by method.",
  labelNames: ["method"] as const,
  buckets: [0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10, 60, 300],
  registers: [metricsRegistry],
});

export const grpcInFlight = new Gauge({
  name: "sppo_grpc_server_in_flight",
  help: "gRPC calls in progress, by method.",
  labelNames: ["method"] as const,
  registers: [metricsRegistry],
});

/** Serves `GET /metrics` on host:port (0 = a free port). Returns the server and the bound port. */
export async function serveMetrics(host: string, port: number): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    if (req.method === "GET" && req.url?.split("?")[0] === "/metrics") {
      metricsRegistry.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": metricsRegistry.contentType });
          res.end(text);
        },
        (err: Error) => {
          res.writeHead(500, { "content-type": "text/plain" });
          res.end(`metrics failed: ${err.message}\n`);
        },
      );
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found: the only path here is /metrics\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return { server, port: (server.address() as AddressInfo).port };
}
