/**
 * The services `sppo serve NAME` can run, each a factory from the validated config to the gRPC services it mounts.
 */
import { Generator } from "../gen/sppo/v1/generator_pb.js";
import { Optimizer } from "../gen/sppo/v1/optimizer_pb.js";
import { PreferenceOracle } from "../gen/sppo/v1/oracle_pb.js";
import type { ServiceName } from "../lib/config/default-ports.js";
import type { Config } from "../lib/config/schema.js";
import { type MountedService, mount } from "../lib/grpc/serve.js";

export interface ServiceInstance {
  services: MountedService[];
  /** Releases models and sessions after the server stopped. */
  close(): Promise<void>;
}

export { DEFAULT_SERVICE_PORTS as defaultPorts, type ServiceName } from "../lib/config/default-ports.js";

// Each factory loads its own service's modules: `sppo serve oracle` need not load tfjs or the generator's engines
// (about 1.4 s of CPU per start).
export const serviceFactories: Record<ServiceName, (config: Config) => Promise<ServiceInstance>> = {
  generator: async (config) => {
    const { createGeneratorService } = await import("./generator/server.js");
    const { implementation, close } = await createGeneratorService(config);
    return { services: [mount(Generator, implementation)], close };
  },
  oracle: async (config) => {
    const { createOracleService } = await import("./oracle/server.js");
    const { implementation, close } = await createOracleService({ oracle: config.oracle, client: config.client });
    return { services: [mount(PreferenceOracle, implementation)], close };
  },
  optimizer: async (config) => {
    const { createOptimizerService } = await import("./optimizer/server.js");
    // The server's message limit caps GetWeights chunks.
    const { implementation, close } = await createOptimizerService({ optimizer: config.optimizer, server: config.server });
    return { services: [mount(Optimizer, implementation)], close };
  },
};
