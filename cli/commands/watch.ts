/**
 * `sppo watch ADDR [--json] [--history] [--wait S]`: prints the live telemetry stream of a running loop
 * (sppo.v1.Telemetry/Watch). Says what it waits for; ends with the run (exit 0), or with one line if the loop
 * never answers or goes away (exit 1).
 */
import type { Command } from "commander";
import { connectToLoop, seconds } from "../loop-telemetry.js";

export function register(program: Command): void {
  program
    .command("watch")
    .description("print the live telemetry of a running loop")
    .argument("<addr>", "the loop's telemetry address (host:port, default port 50054)")
    .option("--json", "one protobuf-JSON event per line")
    .option("--history", "replay the events recorded before connecting")
    .option("--wait <seconds>", "how long to wait for the loop to come up", seconds, 60)
    .action(async (addr: string, flags: { json?: boolean; history?: boolean; wait: number }) => {
      // Loaded while the loop is awaited, not at the top: cli/main.ts imports every command's declaration.
      const modules = Promise.all([
        import("@bufbuild/protobuf"),
        import("../../gen/sppo/v1/telemetry_pb.js"),
        import("../../lib/errors.js"),
        import("../../pipeline/telemetry.js"),
      ]);
      const client = await connectToLoop(addr, flags.wait);
      const [{ toJsonString }, { TelemetryEventSchema }, { Code, RpcError }, { describeEvent }] = await modules;
      try {
        for await (const response of client.watch({ includeHistory: Boolean(flags.history) })) {
          if (!response.event) continue;
          process.stdout.write(`${flags.json ? toJsonString(TelemetryEventSchema, response.event) : describeEvent(response.event)}\n`);
        }
        process.stderr.write("the run's telemetry ended\n");
      } catch (err) {
        throw new RpcError(Code.UNAVAILABLE, `the loop at ${addr} went away: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      } finally {
        client.close();
      }
    });
}
