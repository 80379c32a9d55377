/**
 * One optimizer step of preference training, as a pure function of its inputs: given the model, the step's samples
 * (grouped by prompt), the loss / η / clipping / learning-rate settings and the optimizer, it computes the log-probs,
 * the loss and the gradients with micro-batch accumulation, clips them and updates the model in place. No service
 * state, no protobuf: the optimizer service (services/optimizer/trainer.ts) decides which samples make a step and
 * what the learning rate is, and turns the result into telemetry.
 *
 * `TrainStep` is the seam between the trainer and a training engine. An engine implements `step` exactly as
 * `tfjsStep` does (same layout, same loss, same clipping; `stepLayout` gives the layout) and may run it wherever it
 * likes: `tfjsStep` on this thread's tfjs backend, `dataParallelStep` (models/parallel-step.ts) sharded over worker
 * threads. Engines that answer asynchronously (workers, onnxruntime) say so with `synchronous: false`; the trainer
 * then drives them through its asynchronous entry points.
 *
 * The layout (fixed, so that every engine trains the same step):
 *  - the step's groups are split into min(microBatches, groups) contiguous micro-batches of near-equal group counts,
 *    the first ones one group larger;
 *  - within a micro-batch, with chosen/rejected selection, every group's chosen response first, then the rejected
 *    ones in the same order (what lib/sppo `preferenceLoss` splits); with all-K selection the samples in order;
 *  - a micro-batch's mean loss is weighted by its share of the step's responses, so the step's loss is the mean over
 *    the whole step whatever the split; the weighted gradients are summed, clipped to `maxGradNorm` (global norm),
 *    and the optimizer applies them with `learningRate`.
 * Tests: test/models/train-step.test.ts.
 */
import * as tf from "@tensorflow/tfjs";
import { type LossName, preferenceLoss } from "../lib/sppo/losses.js";
import type { PairSelectionMode } from "../lib/sppo/selection.js";
import { makeBatch, type TokenPair } from "./batch.js";
import type { CausalLM } from "./model.js";
import { sequenceLogProbs } from "./score.js";
import { clipGradNorm, type NamedGrads, type Optimizer, type OptimizerState, valueAndGrads } from "./train.js";

/** One response of a step. */
export interface StepSample {
  /** Prompt token ids (BOS included). */
  prompt: readonly number[];
  /** Response token ids (EOS included when the response ended). */
  response: readonly number[];
  /** Its win rate P̂ in [0, 1]. */
  winRate: number;
  /** Its reference log-prob log π_ref(y|x), summed over the response tokens. */
  ref: number;
}

/** How one step trains. */
export interface StepSettings {
  loss: LossName;
  /** SPPO's η (β = 1/η for the pairwise losses). */
  eta: number;
  /** "chosen_rejected": every group is [chosen, rejected]; "all": every group is all its K samples. */
  selection: PairSelectionMode;
  /** Micro-batches the step is split into (at most one per group); 1 computes it in one pass. */
  microBatches: number;
  /** Gradients are clipped to this global norm. */
  maxGradNorm: number;
  /** This step's learning rate (the caller's schedule). */
  learningRate: number;
}

/** What a step computed. */
export interface StepResult {
  /** The step's loss: the mean over all its responses. */
  loss: number;
  /** log πθ(y|x) before the update, parallel to the groups: `logprobs[g][i]` belongs to `groups[g][i]`. */
  logprobs: number[][];
  /** The global gradient norm before clipping. */
  gradNorm: number;
}

/** A training engine: runs steps on a model in place. */
export interface TrainStep {
  /** For logs and benchmarks ("tfjs", "data-parallel"). */
  readonly name: string;
  /** Whether `step` returns its result (true) or a promise of it (false). */
  readonly synchronous: boolean;
  step(model: CausalLM, optimizer: Optimizer, groups: readonly (readonly StepSample[])[], settings: StepSettings): StepResult | Promise<StepResult>;
  /** Frees what the engine holds (workers, sessions); the model stays the caller's. */
  close(): void | Promise<void>;
  /**
   * An engine that updates with optimizers of its own (models/onnx-train: JS over Float32Arrays) makes them here, fresh
   * or from a saved state (the checkpoint format is the same for all); the trainer then asks it for every optimizer.
   * Absent: models/train.ts's tfjs optimizers.
   */
  optimizer?(kind: "adam" | "rmsprop", state?: OptimizerState): Optimizer;
}

/** One micro-batch in loss order. */
export interface MicroBatch {
  samples: StepSample[];
  /** Where each sample came from: `[group, index]` into the step's groups. */
  origin: [number, number][];
  /** Its share of the step's responses (its mean loss is multiplied by this). */
  weight: number;
}

/** The micro-batches of a step, in loss order (see the layout above). */
export function stepLayout(groups: readonly (readonly StepSample[])[], settings: Pick<StepSettings, "selection" | "microBatches">): MicroBatch[] {
  if (groups.length === 0) throw new RangeError("a step needs at least one group");
  if (!Number.isInteger(settings.microBatches) || settings.microBatches < 1) throw new RangeError(`microBatches must be a positive integer, got ${settings.microBatches}`);
  const total = groups.reduce((acc, g) => acc + g.length, 0);
  const parts = Math.min(settings.microBatches, groups.length);
  const out: MicroBatch[] = [];
  for (let i = 0, start = 0; i < parts; i++) {
    const size = Math.floor(groups.length / parts) + (i < groups.length % parts ? 1 : 0);
    const origin: [number, number][] = [];
    if (settings.selection === "all") {
      for (let g = start; g < start + size; g++) for (let j = 0; j < groups[g].length; j++) origin.push([g, j]);
    } else {
      for (let g = start; g < start + size; g++) {
        if (groups[g].length !== 2) throw new RangeError(`group ${g}: chosen/rejected selection needs [chosen, rejected], got ${groups[g].length} samples`);
        origin.push([g, 0]);
      }
      for (let g = start; g < start + size; g++) origin.push([g, 1]);
    }
    const samples = origin.map(([g, j]) => groups[g][j]);
    out.push({ samples, origin, weight: samples.length / total });
    start += size;
  }
  return out;
}

/** The token pairs of a micro-batch (what makeBatch and the engines take). */
export function stepPairs(samples: readonly StepSample[]): TokenPair[] {
  return samples.map((s) => ({ prompt: s.prompt as number[], response: s.response as number[] }));
}

/** The padding id the step's batches use: the model's pad token, else its EOS, else 0. */
export function stepPadId(model: CausalLM): number {
  return model.config.pad_token_id ?? model.config.eos_token_id ?? 0;
}

/**
 * What every engine's step gathers over its micro-batches, whatever computes one: the summed loss, each response's
 * log-prob at its place in the step's groups, and the summed gradients — then clips and applies them once.
 */
export class StepSums {
  private readonly logprobs: number[][];
  private grads: NamedGrads | null = null;
  private loss = 0;

  constructor(groups: readonly (readonly StepSample[])[]) {
    this.logprobs = groups.map((g) => new Array<number>(g.length).fill(0));
  }

  /** Adds one micro-batch: its weighted loss, its gradients (taken over and disposed of) and its log-probs in loss order. */
  add(mb: MicroBatch, loss: number, grads: NamedGrads, logprobs: ArrayLike<number>): void {
    this.loss += loss;
    this.grads = accumulateGrads(this.grads, grads);
    mb.origin.forEach(([g, j], i) => {
      this.logprobs[g][j] = logprobs[i];
    });
  }

  /** Frees the gradients gathered so far (the step failed). */
  dispose(): void {
    if (this.grads) tf.dispose(Object.values(this.grads));
    this.grads = null;
  }

  /** Clips and applies the summed gradients (disposing them): the step's result. */
  apply(model: CausalLM, optimizer: Optimizer, settings: Pick<StepSettings, "maxGradNorm" | "learningRate">): StepResult {
    const gradNorm = applyGrads(model, optimizer, this.grads, settings);
    this.grads = null;
    return { loss: this.loss, logprobs: this.logprobs, gradNorm };
  }
}

/** Adds `grads` into `sum` (by name) and disposes `grads`; returns the sum (which is `grads` itself when `sum` is null). */
function accumulateGrads(sum: NamedGrads | null, grads: NamedGrads): NamedGrads {
  if (sum === null) return grads;
  for (const [name, g] of Object.entries(grads)) {
    const prev = sum[name];
    sum[name] = prev ? tf.add(prev, g) : g.clone();
    prev?.dispose();
    g.dispose();
  }
  return sum;
}

/** Clips the step's summed gradients and applies them; disposes them. Returns the norm before clipping. */
function applyGrads(model: CausalLM, optimizer: Optimizer, grads: NamedGrads | null, settings: Pick<StepSettings, "maxGradNorm" | "learningRate">): number {
  const all = grads ?? {};
  const { grads: clipped, norm } = clipGradNorm(all, settings.maxGradNorm);
  try {
    optimizer.apply(model.params, clipped, settings.learningRate);
  } finally {
    tf.dispose([...Object.values(all), ...Object.values(clipped)]);
  }
  return norm;
}

/** The step on this thread's tfjs backend: one forward and backward pass per micro-batch. */
export function tfjsTrainStep(model: CausalLM, optimizer: Optimizer, groups: readonly (readonly StepSample[])[], settings: StepSettings): StepResult {
  const padId = stepPadId(model);
  const sums = new StepSums(groups);
  try {
    for (const mb of stepLayout(groups, settings)) {
      const batch = makeBatch(stepPairs(mb.samples), padId);
      const ref = tf.tensor1d(mb.samples.map((s) => s.ref));
      const winRate = tf.tensor1d(mb.samples.map((s) => s.winRate));
      let kept: tf.Tensor1D | null = null;
      try {
        const { value, grads } = valueAndGrads(model, () => {
          const lp = sequenceLogProbs(model, batch); // (N) summed over response tokens
          kept = tf.keep(lp);
          return tf.mul(preferenceLoss(settings.loss, tf.sub(lp, ref) as tf.Tensor1D, winRate, settings.eta), mb.weight) as tf.Scalar;
        });
        const loss = value.dataSync()[0];
        value.dispose();
        sums.add(mb, loss, grads, (kept as tf.Tensor1D | null)?.dataSync() ?? new Float32Array(mb.samples.length));
      } finally {
        (kept as tf.Tensor1D | null)?.dispose();
        tf.dispose([ref, winRate]);
        batch.dispose();
      }
    }
  } catch (err) {
    sums.dispose();
    throw err;
  }
  return sums.apply(model, optimizer, settings);
}

/** The reference engine: `tfjsTrainStep` on this thread. */
export const tfjsStep: TrainStep = {
  name: "tfjs",
  synchronous: true,
  step: tfjsTrainStep,
  close() {},
};
