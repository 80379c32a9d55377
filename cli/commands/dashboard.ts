/**
 * `sppo dashboard ADDR [--port N] [--host H] [--wait S]`: the live dashboard of a loop that runs anywhere (another
 * terminal, a Kubernetes Job behind `kubectl port-forward`), the same page `sppo run` serves, fed from the loop's
 * sppo.v1.Telemetry/Watch stream. Prints `dashboard: URL` once the page is served; when the run ends the page keeps
 * its final numbers until Ctrl-C.
 */
import { type Command, Option } from "commander";
import { connectToLoop, seconds } from "../loop-telemetry.js";
import { parsePort } from "./serve.js";

export function register(program: Command): void {
  program
    .command("dashboard")
    .description("serve the live dashboard of a running loop (the page `sppo run` serves)")
    .argument("<addr>", "the loop's telemetry address (host:port, default port 50054)")
    .option("--port <n>", "port of the page (0 = any free port)", parsePort, 0)
    .addOption(new Option("--host <host>", "interface the page listens on").default("127.0.0.1"))
    .option("--wait <seconds>", "how long to wait for the loop to come up", seconds, 60)
    .action(async (addr: string, flags: { port: number; host: string; wait: number }) => {
      // Loaded while the loop is awaited, not at the top: cli/main.ts imports every command's declaration.
      const modules = Promise.all([
        import("../../lib/errors.js"),
        import("../../lib/log.js"),
        import("../../pipeline/dashboard/serve-dashboard.js"),
        import("../../pipeline/telemetry.js"),
      ]);
      const client = await connectToLoop(addr, flags.wait);
      const [{ RpcError }, { log }, { serveDashboard }, { TelemetryHub }] = await modules;
      const hub = new TelemetryHub("", "dashboard");
      const dashboard = await serveDashboard({ hub, host: flags.host, port: flags.port, portSetting: "--port (0 = any free port)" }).catch((err) => {
        client.close();
        throw err;
      });
      process.stdout.write(`dashboard: ${dashboard.url}\n`);
      const stopped = new Promise<void>((resolve) => {
        const stop = () => {
          process.off("SIGINT", stop);
          process.off("SIGTERM", stop);
          resolve();
        };
        process.on("SIGINT", stop);
        process.on("SIGTERM", stop);
      });
      const follow = (async () => {
        try {
          // Events keep the run's id, time and source: the hub only passes them on.
          for await (const response of client.watch({ includeHistory: true })) if (response.event) hub.emit(response.event);
          process.stderr.write("the run's telemetry ended; the page keeps its final numbers (Ctrl-C to stop)\n");
        } catch (err) {
          process.stderr.write(`the loop at ${addr} went away (${err instanceof RpcError ? err.message : String(err)}); the page keeps what it showed (Ctrl-C to stop)\n`);
        } finally {
          hub.complete();
        }
      })();
      await stopped;
      client.close();
      await follow;
      await dashboard.close();
      log.debug("dashboard stopped");
    });
}
