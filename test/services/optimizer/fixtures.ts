/**
 * Shared fixtures of the optimizer tests: a tiny GPT-2 policy saved as a real HF model directory, and self-play
 * examples for it (random token sequences, win rates from a random preference matrix, reference log-probs scored
 * with the base policy exactly as the pipeline would).
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type * as tf from "@tensorflow/tfjs";
import {
  type IterationEnd,
  IterationEndSchema,
  type IterationStart,
  IterationStartSchema,
  type TrainingExample,
  TrainingExampleSchema,
  TrainingParamsSchema,
} from "../../../gen/sppo/v1/optimizer_pb.js";
import { type OptimizerConfig, optimizerConfigSchema } from "../../../lib/config/optimizer.js";
import { type Code, RpcError } from "../../../lib/errors.js";
import { Rng } from "../../../lib/rng.js";
import { winRatesFromPreferences } from "../../../lib/sppo/winrate.js";
import { createModel, gpt2Config, loadModel, saveModel, scorePairs } from "../../../models/index.js";
import type { CheckpointEntry } from "../../../services/optimizer/checkpoint.js";
import { Trainer } from "../../../services/optimizer/trainer.js";

export const VOCAB = 16;

/** Makes a fresh directory holding a tiny GPT-2 (HF layout) and returns the root (model in `<root>/base`). */
export function makeBaseModel(seed = 7): string {
  const root = mkdtempSync(join(tmpdir(), "sppo-optimizer-"));
  const model = createModel(gpt2Config({ vocab_size: VOCAB, n_positions: 32, n_embd: 16, n_layer: 1, n_head: 2, bos_token_id: 1, eos_token_id: 2, pad_token_id: 0 }), undefined, seed);
  saveModel(join(root, "base"), model);
  model.dispose();
  return root;
}

/** An optimizer config rooted at `root` (base model in `<root>/base`), with overrides. */
export function configAt(root: string, overrides: Record<string, unknown> = {}): OptimizerConfig {
  return optimizerConfigSchema.parse({
    modelDir: join(root, "base"),
    policyDir: join(root, "policies"),
    checkpointDir: join(root, "checkpoints"),
    // In this thread, so that tests can read the trainer's weights directly (services test the worker explicitly).
    trainInWorker: false,
    ...overrides,
  });
}

/**
 * A run at `root` (learning rate 0.01, batches of 2, no warm-up) with two checkpoints of iteration 1: `older` after
 * one step, `newer` after two. The trainer is disposed.
 */
export function twoCheckpoints(root: string): { config: OptimizerConfig; older: CheckpointEntry; newer: CheckpointEntry } {
  const config = configAt(root, { learningRate: 0.01, batchSize: 2, warmupRatio: 0 });
  const examples = makeExamples(config.modelDir, { prompts: 2, k: 2 });
  const t = Trainer.open(config);
  try {
    t.start(startMsg(2));
    t.addExample(examples[0]);
    t.addExample(examples[1]);
    const older = t.saveCheckpoint();
    t.addExample(examples[2]);
    t.addExample(examples[3]);
    const newer = t.saveCheckpoint();
    return { config, older, newer };
  } finally {
    t.dispose();
  }
}

/** K samples for each of `prompts` prompts, scored against the policy in `modelDir`. */
export function makeExamples(modelDir: string, options: { prompts: number; k: number; iteration?: number; seed?: number }): TrainingExample[] {
  const rng = new Rng(options.seed ?? 1);
  const int = (lo: number, hi: number) => lo + Math.floor(rng.next() * (hi - lo));
  const { model } = loadModel(modelDir);
  const out: TrainingExample[] = [];
  try {
    for (let p = 0; p < options.prompts; p++) {
      const prompt = [1, ...Array.from({ length: int(1, 5) }, () => int(3, VOCAB))];
      const responses = Array.from({ length: options.k }, () => [...Array.from({ length: int(1, 6) }, () => int(3, VOCAB)), 2]);
      // A random constant-sum preference matrix over the K responses.
      const P = responses.map(() => new Array<number>(options.k).fill(0.5));
      for (let i = 0; i < options.k; i++) {
        for (let j = i + 1; j < options.k; j++) {
          P[i][j] = rng.next();
          P[j][i] = 1 - P[i][j];
        }
      }
      const winRates = winRatesFromPreferences(P);
      const refs = scorePairs(model, responses.map((r) => ({ prompt, response: r })), { padId: 0 });
      for (const [i, response] of responses.entries()) {
        out.push(
          create(TrainingExampleSchema, {
            promptId: `p${p}`,
            promptTokenIds: prompt,
            responseTokenIds: response,
            winRate: winRates[i],
            referenceLogprob: refs[i].logprob,
            iteration: options.iteration ?? 1,
            sampleIndex: i,
            groupSize: options.k,
          }),
        );
      }
    }
  } finally {
    model.dispose();
  }
  return out;
}

export function startMsg(totalPrompts: number, params: MessageInitShape<typeof TrainingParamsSchema> = {}, iteration = 1): IterationStart {
  return create(IterationStartSchema, { iteration, totalPrompts, baseVersion: iteration - 1, params: create(TrainingParamsSchema, params) });
}

export function endMsg(iteration = 1): IterationEnd {
  return create(IterationEndSchema, { iteration });
}

/** Every parameter of a model as plain arrays, by name. */
export function snapshotParams(params: ReadonlyMap<string, tf.Variable>): Map<string, Float32Array> {
  return new Map([...params].map(([name, v]) => [name, Float32Array.from(v.dataSync())]));
}

/** Largest absolute difference between two parameter snapshots (throws when names differ). */
export function maxAbsDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  let worst = 0;
  for (const [name, x] of a) {
    const y = b.get(name);
    if (!y) throw new Error(`parameter ${name} missing`);
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]));
  }
  return worst;
}

/** The gRPC code of the RpcError `fn` throws (undefined when it returns; any other error is rethrown). */
export function rpcCode(fn: () => unknown): Code | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof RpcError) return err.code;
    throw err;
  }
  return undefined;
}
