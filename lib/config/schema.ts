/**
 * The one configuration schema of the project. Each section lives in its own file beside this one and is owned by
 * the part of the system it configures; every field has a default, so an empty config runs the embedded default task.
 */
import { z } from "zod";
import { engineConfigSchema } from "./engine.js";
import { generatorConfigSchema } from "./generator.js";
import { optimizerConfigSchema } from "./optimizer.js";
import { oracleConfigSchema } from "./oracle.js";
import { pipelineConfigSchema } from "./pipeline.js";
import { clientConfigSchema, serverConfigSchema } from "./server.js";

export const configSchema = z
  .object({
    server: serverConfigSchema.default(serverConfigSchema.parse({})),
    client: clientConfigSchema.default(clientConfigSchema.parse({})),
    generator: generatorConfigSchema.default(generatorConfigSchema.parse({})),
    oracle: oracleConfigSchema.default(oracleConfigSchema.parse({})),
    optimizer: optimizerConfigSchema.default(optimizerConfigSchema.parse({})),
    pipeline: pipelineConfigSchema.default(pipelineConfigSchema.parse({})),
    engine: engineConfigSchema.default(engineConfigSchema.parse({})),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;
