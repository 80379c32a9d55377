/**
 * Reaching a running loop's telemetry (sppo.v1.Telemetry/Watch) from `sppo watch` and `sppo dashboard`: says on
 * stderr what it waits for, and gives up after the wait with one line naming the address and the setting.
 */
import { InvalidArgumentError } from "commander";
import type { Telemetry } from "../gen/sppo/v1/telemetry_pb.js";
import type { Client } from "../lib/grpc/client.js";

/** Resolves with a client once the loop at `addr` answers; rejects with a one-line user error after `waitSeconds`. */
export async function connectToLoop(addr: string, waitSeconds: number): Promise<Client<typeof Telemetry>> {
  // Loaded here, not at the top: `sppo`'s command declarations import this file (cli/main.ts).
  const [{ Telemetry }, { Code, RpcError }, { createClient }] = await Promise.all([
    import("../gen/sppo/v1/telemetry_pb.js"),
    import("../lib/errors.js"),
    import("../lib/grpc/client.js"),
  ]);
  // Waiting for a loop that is not up yet: retry the connection often (grpc-js backs off up to 2 minutes by
  // default, long enough to miss a short run entirely).
  const client = createClient(Telemetry, addr, {
    channelOptions: { "grpc.initial_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 500 },
  });
  process.stderr.write(`waiting for the loop's telemetry at ${addr} (up to ${waitSeconds} s; --wait changes it)…\n`);
  try {
    await client.waitForReady(waitSeconds * 1000);
  } catch {
    client.close();
    throw new RpcError(
      Code.UNAVAILABLE,
      `no loop answered at ${addr} within ${waitSeconds} s: is \`sppo run\` running, and is ${addr} its telemetry address (pipeline.telemetryPort, default 50054)?`,
    );
  }
  process.stderr.write(`connected to ${addr}\n`);
  return client;
}

/** A non-negative number of seconds, for --wait. */
export function seconds(value: string): number {
  const n = Number(value);
  if (!(Number.isFinite(n) && n >= 0)) throw new InvalidArgumentError(`not a number of seconds: ${value}`);
  return n;
}
