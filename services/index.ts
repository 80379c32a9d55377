/**
 * The services `sppo serve NAME` can run, each a factory from the validated config to the gRPC services it mounts.
 */
import { Generator } from "../gen/sppo/v1/generator_pb.js";
import { Optimizer } from "../gen/sppo/v1/optimizer_pb.js";
import { PreferenceOracle } from "../gen/sppo/v1/oracle_pb.js";
import type { ServiceName } from "../lib/config/default-ports.js";
import type { Config } from "../lib/config/schema.js";
import { type MountedService, mount } from "../lib/grpc/serve.js";
import { createGeneratorService } from "./generator/server.js";
import { createOptimizerService } from "./optimizer/server.js";
import { createOracleService } from "./oracle/server.js";

export interface ServiceInstance {
  services: MountedService[];
  /** Releases models and sessions after the server stopped. */
  close(): Promise<void>;
}

export { DEFAULT_SERVICE_PORTS as defaultPorts, type ServiceName } from "../lib/config/default-ports.js";

export const serviceFactories: Record<ServiceName, (config: Config) => Promise<ServiceInstance>> = {
  generator: async (config) => {
    const { implementation, close } = await createGeneratorService(config);
    return { services: [mount(Generator, implementation)], close };
  },
  oracle: async (config) => {
    const { implementation, close } = await createOracleService({ oracle: config.oracle, client: config.client });
    return { services: [mount(PreferenceOracle, implementation)], close };
  },
  optimizer: async (config) => {
    // The server's message limit caps GetWeights chunks.
    const { implementation, close } = await createOptimizerService({ optimizer: config.optimizer, server: config.server });
    return { services: [mount(Optimizer, implementation)], close };
  },
};
