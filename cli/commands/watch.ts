/** `sppo watch ADDR [--json] [--history]`: prints the live telemetry stream of a running loop (sppo.v1.Telemetry/Watch). */
import { toJsonString } from "@bufbuild/protobuf";
import type { Command } from "commander";
import { TelemetryEventSchema, Telemetry } from "../../gen/sppo/v1/telemetry_pb.js";
import { createClient } from "../../lib/grpc/client.js";
import { describeEvent } from "../../pipeline/telemetry.js";

export function register(program: Command): void {
  program
    .command("watch")
    .description("print the live telemetry of a running loop")
    .argument("<addr>", "the loop's telemetry address (host:port, default port 50054)")
    .option("--json", "one protobuf-JSON event per line")
    .option("--history", "replay the events recorded before connecting")
    .option("--wait <seconds>", "how long to wait for the loop to come up", (v) => Number(v), 60)
    .action(async (addr: string, flags: { json?: boolean; history?: boolean; wait: number }) => {
      // Waiting for a loop that is not up yet: retry the connection often (grpc-js backs off up to 2 minutes by
      // default, long enough to miss a short run entirely).
      const client = createClient(Telemetry, addr, {
        channelOptions: { "grpc.initial_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 500 },
      });
      try {
        await client.waitForReady(flags.wait * 1000);
        for await (const response of client.watch({ includeHistory: Boolean(flags.history) })) {
          if (!response.event) continue;
          process.stdout.write(`${flags.json ? toJsonString(TelemetryEventSchema, response.event) : describeEvent(response.event)}\n`);
        }
      } finally {
        client.close();
      }
    });
}
