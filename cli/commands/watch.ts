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
    .action(async (addr: string, flags: { json?: boolean; history?: boolean }) => {
      const client = createClient(Telemetry, addr);
      try {
        await client.waitForReady(10_000);
        for await (const response of client.watch({ includeHistory: Boolean(flags.history) })) {
          if (!response.event) continue;
          process.stdout.write(`${flags.json ? toJsonString(TelemetryEventSchema, response.event) : describeEvent(response.event)}\n`);
        }
      } finally {
        client.close();
      }
    });
}
