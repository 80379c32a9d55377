import { z } from "zod";

/** The tfjs policy engine (models/): which backend, which default model, how large its batches are. */
export const engineConfigSchema = z
  .object({
    /** tfjs backend: "auto" = native tensorflow (tfjs-node-gpu / tfjs-node) → wasm → cpu. @default "auto" */
    backend: z.enum(["auto", "tensorflow", "wasm", "cpu"]).default("auto"),
    /** Model directory used when a command names none (config.json, model.safetensors, tokenizer.json). @default "assets/policy" */
    modelDir: z.string().min(1).default("assets/policy"),
    /** Rows per forward pass when scoring (padding is masked; larger uses more memory). @default 16 */
    scoreBatchSize: z.number().int().min(1).max(4096).default(16),
  })
  .strict();

export type EngineConfig = z.infer<typeof engineConfigSchema>;
