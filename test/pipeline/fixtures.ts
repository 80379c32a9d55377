/** Tiny runs of the whole loop for the pipeline's tests: a tiny random policy, a prompt file, and a config over them. */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Config, configSchema } from "../../lib/config/schema.js";
import { writeTinyPolicy } from "../services/generator/fixtures.js";

/** A fresh directory with a tiny policy (weights from `seed`, made after the backend is ready) and `prompts` as prompts.jsonl; outputs go to out/. */
export function tinyRun(prefix: string, seed: number, prompts: string[]): { policy: string; prompts: string; outDir: string } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const policy = join(dir, "policy");
  mkdirSync(policy);
  writeTinyPolicy(policy, seed);
  const promptsFile = join(dir, "prompts.jsonl");
  writeFileSync(promptsFile, `${prompts.map((prompt) => JSON.stringify({ prompt })).join("\n")}\n`);
  return { policy, prompts: promptsFile, outDir: join(dir, "out") };
}

/** A run's config: the tiny `policy` for generator (6 new tokens) and optimizer (adam, 1e-3, batches of 4, η 2), `oracle`, and `pipeline`. */
export function runConfig(policy: string, oracle: string, pipeline: Record<string, unknown>): Config {
  return configSchema.parse({
    server: { metricsPort: -1 },
    generator: { modelDir: policy, sampling: { maxNewTokens: 6 } },
    oracle: { backend: oracle },
    optimizer: { modelDir: policy, learningRate: 1e-3, optimizer: "adam", batchSize: 4, eta: 2 },
    pipeline,
  });
}
