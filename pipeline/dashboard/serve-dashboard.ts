/**
 * The live dashboard: one HTTP server that serves the page (pipeline/dashboard/page/), its charting library
 * (uPlot, from node_modules: the page loads nothing from elsewhere, so it works offline), and the run's telemetry
 * as Server-Sent Events: every TelemetryEvent as protobuf JSON (the form of metrics.jsonl), the history first, then
 * each live event as the hub emits it. `sppo run` feeds it its own hub; `sppo dashboard ADDR` a hub filled from the
 * loop's sppo.v1.Telemetry/Watch stream.
 *
 * Example: `const dashboard = await serveDashboard({ hub, host: "127.0.0.1", port: 0 }); console.log(dashboard.url)`
 */
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createRequire } from "node:module";
import { toJsonString } from "@bufbuild/protobuf";
import { type TelemetryEvent, TelemetryEventSchema } from "../../gen/sppo/v1/telemetry_pb.js";
import { bindError } from "../../lib/grpc/serve.js";
import { log } from "../../lib/log.js";
import type { TelemetryHub } from "../telemetry.js";

export interface DashboardOptions {
  hub: TelemetryHub;
  /** Interface to bind. */
  host: string;
  /** 0 = any free port. */
  port: number;
  /** Where a person sets the port, named when it is taken. @default "pipeline.dashboardPort" */
  portSetting?: string;
}

export interface Dashboard {
  /** The page's address, e.g. http://127.0.0.1:41234/ (loopback when bound to every interface). */
  readonly url: string;
  readonly port: number;
  /** Ends every event stream (after what they were sent) and stops the server. */
  close(): Promise<void>;
}

const require = createRequire(import.meta.url);
const pageDir = new URL("./page/", import.meta.url);

/** Path → [file, content type]. Everything the page loads is here. */
const assets: Record<string, [string, string]> = {
  "/": [new URL("index.html", pageDir).pathname, "text/html; charset=utf-8"],
  "/dashboard.js": [new URL("dashboard.js", pageDir).pathname, "text/javascript; charset=utf-8"],
  "/dashboard.css": [new URL("dashboard.css", pageDir).pathname, "text/css; charset=utf-8"],
  "/vendor/uPlot.iife.min.js": [require.resolve("uplot/dist/uPlot.iife.min.js"), "text/javascript; charset=utf-8"],
  "/vendor/uPlot.min.css": [require.resolve("uplot/dist/uPlot.min.css"), "text/css; charset=utf-8"],
};

/** A comment line keeps idle connections open through proxies that close silent ones. */
const KEEPALIVE_MS = 15_000;

function sseEvent(event: TelemetryEvent): string {
  return `event: telemetry\ndata: ${toJsonString(TelemetryEventSchema, event)}\n\n`;
}

export async function serveDashboard(options: DashboardOptions): Promise<Dashboard> {
  const { hub } = options;
  const streams = new Set<ServerResponse>();
  let ended = false;

  const openStream = (req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
    // A reconnecting page starts over: it is sent the hub's history again (its newest pipeline.telemetryHistoryEvents)
    // and drops what it had.
    res.write("retry: 2000\nevent: reset\ndata: {}\n\n");
    // History and subscription in one synchronous step: no event is missed or sent twice.
    for (const event of hub.history) res.write(sseEvent(event));
    if (ended) {
      res.end("event: end\ndata: {}\n\n");
      return;
    }
    streams.add(res);
    const subscription = hub.events$.subscribe({
      next: (event) => res.write(sseEvent(event)),
      complete: () => {
        streams.delete(res);
        res.end("event: end\ndata: {}\n\n");
      },
    });
    const keepalive = setInterval(() => res.write(": keepalive\n\n"), KEEPALIVE_MS);
    keepalive.unref();
    req.on("close", () => {
      clearInterval(keepalive);
      subscription.unsubscribe();
      streams.delete(res);
    });
  };

  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/events") {
      openStream(req, res);
      return;
    }
    const asset = assets[path];
    if (!asset) {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end(`not found: ${path}\n`);
      return;
    }
    res.writeHead(200, { "content-type": asset[1], "cache-control": "no-cache" });
    res.end(readFileSync(asset[0]));
  });
  hub.events$.subscribe({ complete: () => (ended = true) });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  }).catch((err: Error) => {
    throw bindError("dashboard", `${options.host}:${options.port}`, options.portSetting ?? "pipeline.dashboardPort (0 = any free port, -1 = off)", err);
  });
  const port = (server.address() as AddressInfo).port;
  const shown = options.host === "0.0.0.0" || options.host === "::" ? "127.0.0.1" : options.host.includes(":") ? `[${options.host}]` : options.host;
  const url = `http://${shown}:${port}/`;
  log.info({ url }, "dashboard");
  return {
    url,
    port,
    close: async () => {
      for (const res of streams) res.end();
      streams.clear();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // server.close() waits for every connection, and one a browser opened ahead of need and never sent a request
      // on is not idle to Node: an open tab held `sppo run` from exiting. Every stream has had its end: close them.
      server.closeAllConnections();
      await closed;
    },
  };
}
