/**
 * The fast training path as a models/ `TrainStep` (the seam of models/train-step.ts): the same step layout, loss,
 * clipping and update as `tfjsStep`, with each micro-batch's forward and backward pass one onnxruntime run
 * (step.ts; MLAS kernels on every core) and the update in JS over Float32Arrays (optimizer.ts).
 *
 * The model's tf.Variables stay the source of truth for everything else (publishing, checkpoints, sampling): the
 * engine keeps a float32 mirror of them, re-read only for a variable that someone else changed since (its data id
 * moved), and writes the updated weights back after every step. The update runs on the mirror, so the optimizer
 * must be an `ArrayOptimizer` (what `optimizer()` makes; its state is the checkpoint format of both engines).
 *
 *   const engine = onnxTrainStep({ intraOpThreads: 2 });
 *   const optimizer = engine.optimizer("rmsprop");           // or engine.optimizer(kind, savedState)
 *   const result = await engine.step(model, optimizer, groups, settings);
 *   await engine.close();
 */
import * as tf from "@tensorflow/tfjs";
import type { CausalLM } from "../model.js";
import type { OrtSessionOptions } from "../onnx/session.js";
import type { Optimizer, OptimizerState } from "../train.js";
import { type StepResult, stepLayout, stepPadId, stepPairs, type TrainStep } from "../train-step.js";
import { ArrayAdam, ArrayRMSprop, arrayOptimizerFromState, clipGradNormInPlace, isArrayOptimizer } from "./optimizer.js";
import { type NamedArrays, OrtGradients } from "./step.js";

/** Options of the onnxruntime engine: its sessions' (threads 0 = one per physical core). */
export type OnnxTrainStepOptions = OrtSessionOptions;

/** The onnxruntime TrainStep, which also makes the optimizers it updates fastest. */
export interface OnnxTrainStep extends TrainStep {
  readonly synchronous: false;
  step(...args: Parameters<TrainStep["step"]>): Promise<StepResult>;
  /** A fresh optimizer of `kind`, or one resumed from `state` (written by either engine). */
  optimizer(kind: "adam" | "rmsprop", state?: OptimizerState): Optimizer;
}

/** A float32 copy of a model's variables, refreshed per variable when its data changed behind the engine's back. */
class Mirror {
  readonly arrays: NamedArrays = new Map();
  readonly shapes = new Map<string, readonly number[]>();
  private readonly seen = new Map<string, object>();

  sync(model: CausalLM): NamedArrays {
    for (const [name, v] of model.params) {
      if (this.seen.get(name) === v.dataId) continue;
      this.arrays.set(name, new Float32Array(v.dataSync() as Float32Array));
      this.shapes.set(name, v.shape);
      this.seen.set(name, v.dataId);
    }
    return this.arrays;
  }

  /** Assigns the mirror's values to the variables (a copy each: the mirror keeps being updated in place). */
  writeBack(model: CausalLM): void {
    // wasm copies the array into its heap at once; cpu (and tensorflow, until first use) keep the array given.
    const copy = tf.getBackend() !== "wasm";
    for (const [name, v] of model.params) {
      const data = this.arrays.get(name)!;
      tf.tidy(() => v.assign(tf.tensor(copy ? new Float32Array(data) : data, v.shape, "float32")));
      this.seen.set(name, v.dataId);
    }
  }
}

/** The onnxruntime engine; sessions are built for the model's config on its first step. */
export function onnxTrainStep(options: OnnxTrainStepOptions = {}): OnnxTrainStep {
  let grads: OrtGradients | undefined;
  let bound: CausalLM | undefined;
  let mirror = new Mirror();
  return {
    name: "onnxruntime",
    synchronous: false as const,
    optimizer(kind, state) {
      if (state) {
        if (state.kind !== kind) throw new TypeError(`optimizer state is for ${state.kind}, not ${kind}`);
        return arrayOptimizerFromState(state);
      }
      return kind === "adam" ? new ArrayAdam() : new ArrayRMSprop();
    },
    async step(model, optimizer, groups, settings): Promise<StepResult> {
      if (!isArrayOptimizer(optimizer)) throw new TypeError("the onnxruntime train step updates with its own optimizers: make them with engine.optimizer(kind, state?)");
      if (bound !== model) {
        await grads?.dispose();
        grads = await OrtGradients.create(model.config, options);
        bound = model;
        mirror = new Mirror();
      }
      const engine = grads as OrtGradients;
      const weights = mirror.sync(model);
      const padId = stepPadId(model);
      const logprobs = groups.map((g) => new Array<number>(g.length).fill(0));
      let sum: NamedArrays | null = null;
      let loss = 0;
      for (const mb of stepLayout(groups, settings)) {
        const out = await engine.run(
          weights,
          stepPairs(mb.samples),
          { kind: settings.loss, ref: mb.samples.map((s) => s.ref), winRate: mb.samples.map((s) => s.winRate), eta: settings.eta, scale: mb.weight },
          padId,
        );
        loss += out.loss;
        if (sum === null) sum = out.grads;
        else {
          for (const [name, g] of out.grads) {
            const acc = sum.get(name);
            if (!acc) sum.set(name, g);
            else for (let i = 0; i < g.length; i++) acc[i] += g[i];
          }
        }
        mb.origin.forEach(([g, j], i) => {
          logprobs[g][j] = out.logprobs[i];
        });
      }
      const all = sum ?? new Map<string, Float32Array>();
      const gradNorm = clipGradNormInPlace(all, settings.maxGradNorm);
      optimizer.applyArrays(weights, all, settings.learningRate, mirror.shapes);
      mirror.writeBack(model);
      return { loss, logprobs, gradNorm };
    },
    async close() {
      await grads?.dispose();
      grads = undefined;
      bound = undefined;
      mirror = new Mirror();
    },
  };
}
