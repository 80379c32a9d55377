/**
 * A GPT-2 of a reference shape (../shared/bench/reference-model*.json) written as a model directory with random
 * weights (normal 0.02, norms 1, seeded), drawn tensor by tensor as the writer asks for them, so that the writing
 * process never holds the whole set. The directory goes into the OS's temporary folder (not /dev/shm: a tmpfs file
 * that a prepacking session leaves unmapped is memory the row's peak RSS would not show).
 * A helper of the bench/scale children, not a row group.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRng } from "../../lib/rng.js";
import { configToJson, type DeferredTensor, type GPT2Config, gpt2Config, paramShapes, writeCheckpointFiles } from "../../models/index.js";
import type { Reference } from "../torch.js";

/** The GPT-2 config of a reference shape. */
export function referenceConfig(ref: Reference): GPT2Config {
  return gpt2Config({ vocab_size: ref.vocab_size, n_embd: ref.d_model, n_layer: ref.n_layers, n_head: ref.n_heads, n_positions: ref.context });
}

/** Writes a random model directory of `config` (weights from `seed`) into a new folder; returns its path. */
export function writeRandomModelDir(config: GPT2Config, seed: number, prefix = "sppo-bench-scale-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const tensors = new Map<string, DeferredTensor>();
  for (const [index, [name, shape]] of paramShapes(config).entries()) {
    tensors.set(name, {
      shape,
      read: () => {
        const data = new Float32Array(shape.reduce((a, d) => a * d, 1));
        if (/ln_\d|ln_f/.test(name)) data.fill(name.endsWith(".weight") ? 1 : 0);
        else {
          const rng = createRng(seed, index);
          for (let i = 0; i < data.length; i++) data[i] = 0.02 * rng.normal();
        }
        return data;
      },
    });
  }
  writeFileSync(join(dir, "config.json"), JSON.stringify(configToJson(config)));
  writeCheckpointFiles(dir, tensors);
  return dir;
}
