/**
 * The dashboard's HTTP server on its own (the browser test is dashboard.test.ts): its event stream ends with the
 * run, and close() returns while a browser still holds connections — one it opened ahead of need and never sent a
 * request on (Chromium does; such a connection once kept `sppo run` from exiting), and an idle keep-alive one.
 * Run: node --import tsx --test test/pipeline/serve-dashboard.test.ts
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { Agent, get } from "node:http";
import { connect } from "node:net";
import { describe, it } from "node:test";
import { serveDashboard } from "../../pipeline/dashboard/serve-dashboard.js";
import { TelemetryHub } from "../../pipeline/telemetry.js";
import { RunState } from "../../gen/sppo/v1/telemetry_pb.js";

describe("the dashboard's server", () => {
  it("ends the event stream when the run ends, and closes with a silent connection and a keep-alive one open", async () => {
    const hub = new TelemetryHub("run-1");
    const dashboard = await serveDashboard({ hub, host: "127.0.0.1", port: 0 });
    hub.emit({ payload: { case: "runStatus", value: { state: RunState.RUNNING } } });

    // The page, over a keep-alive connection that stays open after it.
    const agent = new Agent({ keepAlive: true });
    const page = await new Promise<string>((resolve, reject) => {
      get(dashboard.url, { agent }, (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d) => (body += d));
        res.on("end", () => resolve(body));
      }).on("error", reject);
    });
    assert.match(page, /<html/i);

    // The event stream: the history, then (once the hub completes) its end.
    const stream = await new Promise<string>((resolve, reject) => {
      get(new URL("/events", dashboard.url), (res) => {
        assert.equal(res.headers["content-type"], "text/event-stream");
        let body = "";
        res.setEncoding("utf8").on("data", (d) => {
          body += d;
          if (body.includes("event: telemetry")) hub.complete();
        });
        res.on("end", () => resolve(body));
      }).on("error", reject);
    });
    assert.match(stream, /^retry: \d+\nevent: reset\n/);
    assert.match(stream, /event: telemetry\ndata: \{.*"runStatus"/);
    assert.match(stream, /event: end\ndata: \{\}\n\n$/);

    // A connection that sends nothing, as a browser's speculative one.
    const silent = connect(dashboard.port, "127.0.0.1");
    await once(silent, "connect");
    const silentClosed = once(silent, "close");

    // Were close() to wait for it, the test lets go of it after a while and fails, rather than holding the suite.
    let held = false;
    const timer = setTimeout(() => {
      held = true;
      silent.destroy();
      agent.destroy();
    }, 30_000);
    await dashboard.close();
    clearTimeout(timer);
    agent.destroy();
    assert.equal(held, false, "close() waited for a connection that never sent a request");
    await silentClosed;
  });
});
