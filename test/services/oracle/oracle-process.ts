/**
 * A PreferenceOracle in its own process, for the remote-backend tests: serves the oracle config given as JSON in
 * argv[2] on 127.0.0.1:0 through createOracleService (what `sppo serve oracle` mounts), prints {"port": N} on
 * stdout once serving, and shuts down gracefully on SIGTERM.
 *   node --import tsx test/services/oracle/oracle-process.ts '{"backend":"synthetic-intransitive"}'
 */
import { PreferenceOracle } from "../../../gen/sppo/v1/oracle_pb.js";
import { oracleConfigSchema } from "../../../lib/config/oracle.js";
import { serverConfigSchema } from "../../../lib/config/server.js";
import { installShutdownSignals, mount, serve } from "../../../lib/grpc/index.js";
import { createOracleService } from "../../../services/oracle/server.js";

const service = await createOracleService({ oracle: oracleConfigSchema.parse(JSON.parse(process.argv[2] ?? "{}")) });
const running = await serve({
  name: "oracle-process",
  services: [mount(PreferenceOracle, service.implementation)],
  config: { ...serverConfigSchema.parse({ host: "127.0.0.1", port: 0, metricsPort: -1, drainDelayMs: 0, shutdownGraceMs: 2_000 }), port: 0 },
  onStopped: () => void service.close(),
});
installShutdownSignals(running);
process.stdout.write(`${JSON.stringify({ port: running.port })}\n`);
