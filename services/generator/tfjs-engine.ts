/**
 * The tfjs engine: a policy version loaded by models/ (`loadModel`) on the backend `initBackend` picks, sampling
 * with models/sample.ts (KV cache, per-row seeded generators) and scoring with models/score.ts.
 *
 * tfjs forward passes are synchronous: a run holds the event loop until it finishes. The generator yields to the
 * event loop between runs (so gRPC traffic, health checks and new requests get through) and keeps runs bounded by
 * maxBatch × maxNewTokens.
 */
import { contextLength, initBackend, loadModel, sampleIds, scorePairs } from "../../models/index.js";
import { type EngineLoadOptions, engineSamples, type PolicyEngine } from "./engine.js";

/** Loads the model directory `dir` into a tfjs engine. */
export async function loadTfjsEngine(dir: string, options: EngineLoadOptions = {}): Promise<PolicyEngine> {
  const backend = await initBackend(options.tfjsBackend ?? "auto");
  // The tokenizer is the generator's business; loadModel reads it too, and it is simply dropped here.
  const { model } = loadModel(dir);
  const parameters = [...model.params.values()].reduce((sum, p) => sum + p.size, 0);
  const scoreBatch = options.maxBatch ?? 32;
  return {
    name: `tfjs-${backend.name}`,
    contextLength: contextLength(model.config),
    vocabSize: model.config.vocab_size,
    family: model.config.model_type,
    parameters,
    async sample(promptIds, o) {
      return engineSamples(sampleIds(model, promptIds, o));
    },
    async score(pairs, o) {
      return scorePairs(model, pairs, { batchSize: scoreBatch, padId: o.padId });
    },
    dispose() {
      model.dispose();
    },
  };
}
