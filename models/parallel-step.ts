/**
 * The train step (models/train-step.ts) over DataParallel's worker threads (models/parallel.ts): each micro-batch's
 * log-probs are computed sharded, the loss and ∂loss/∂log-prob are taken on that [N] vector on this thread, and the
 * gradient ∇θ Σ_b (∂loss/∂logp_b) · log π(y_b|x_b) = ∇θ loss is computed sharded again and summed. Same layout, loss,
 * clipping and update as `tfjsStep`; the gradients agree with it to float rounding (test/models/train-step.test.ts),
 * not bit for bit (the shards sum in another order). It costs a second forward pass per micro-batch.
 *
 *   const engine = dataParallelStep({ threads: 2 });
 *   const result = await engine.step(model, optimizer, groups, settings);
 *   await engine.close();
 */
import * as tf from "@tensorflow/tfjs";
import { preferenceLoss } from "../lib/sppo/losses.js";
import type { CausalLM } from "./model.js";
import { DataParallel, type DataParallelOptions } from "./parallel.js";
import { type StepResult, StepSums, stepLayout, stepPadId, stepPairs, type TrainStep } from "./train-step.js";

/** A data-parallel engine; its workers start on the first step (and again when handed another model). */
export function dataParallelStep(options: DataParallelOptions = {}): TrainStep {
  let dp: DataParallel | undefined;
  let bound: CausalLM | undefined;
  return {
    name: "data-parallel",
    synchronous: false,
    async step(model, optimizer, groups, settings): Promise<StepResult> {
      if (bound !== model) {
        await dp?.close();
        dp = undefined;
        dp = await DataParallel.create(model, options);
        bound = model;
      }
      const parallel = dp as DataParallel;
      const padId = stepPadId(model);
      const sums = new StepSums(groups);
      try {
        for (const mb of stepLayout(groups, settings)) {
          const pairs = stepPairs(mb.samples);
          const forward = await parallel.logProbs(pairs, { padId });
          // The micro-batch's weighted loss and its derivative with respect to each response's log-prob.
          const { value, dLoss } = tf.tidy(() => {
            const ref = tf.tensor1d(mb.samples.map((s) => s.ref));
            const winRate = tf.tensor1d(mb.samples.map((s) => s.winRate));
            const f = (lp: tf.Tensor) => tf.mul(preferenceLoss(settings.loss, tf.sub(lp, ref) as tf.Tensor1D, winRate, settings.eta), mb.weight) as tf.Scalar;
            const { value, grad } = tf.valueAndGrad(f)(tf.tensor1d(forward.logprobs));
            return { value: value.dataSync()[0], dLoss: Array.from(grad.dataSync()) };
          });
          const { grads } = await parallel.weightedLogProbGrads(pairs, dLoss, { padId });
          sums.add(mb, value, grads, forward.logprobs);
        }
      } catch (err) {
        sums.dispose();
        throw err;
      }
      return sums.apply(model, optimizer, settings);
    },
    async close() {
      await dp?.close();
      dp = undefined;
      bound = undefined;
    },
  };
}
