/**
 * Scoring: the summed log-probability of each response's tokens given its prompt, prompt tokens masked, in padded
 * batches. `sequenceLogProbs` is the differentiable core that the training losses are built on.
 */
import * as tf from "@tensorflow/tfjs";
import { makeBatch, type TokenBatch, type TokenPair } from "./batch.js";
import type { CausalLM } from "./model.js";

/**
 * Σ_t log π(y_t | x, y_<t) over the response tokens of each row: a [B] tensor, differentiable with respect to the
 * model's parameters (use it inside `tf.variableGrads` / `valueAndGrads`). Log-probs are at temperature 1.
 */
export function sequenceLogProbs(model: CausalLM, batch: TokenBatch): tf.Tensor1D {
  return tf.tidy(() => {
    const { logits } = model.forward(batch.ids, { attentionMask: batch.attentionMask }); // (B, L, V)
    const V = logits.shape[2];
    const logp = tf.logSoftmax(logits, -1); // (B, L, V)
    const picked = logp.mul(tf.oneHot(batch.targets, V)).sum(-1); // (B, L) log π(target_t)
    return picked.mul(batch.responseMask).sum(-1) as tf.Tensor1D; // (B)
  });
}

/** One scored response. */
export interface Score {
  /** Summed log-probability of the response tokens (natural log). */
  logprob: number;
  /** Number of response tokens scored. */
  tokens: number;
}

/**
 * Scores pairs in batches of `batchSize` (rows are grouped in the given order; padding is masked, so a row's score
 * does not depend on its batch-mates beyond float rounding).
 */
export function scorePairs(model: CausalLM, pairs: TokenPair[], options: { batchSize?: number; padId?: number } = {}): Score[] {
  const batchSize = options.batchSize ?? 16;
  const out: Score[] = [];
  for (let i = 0; i < pairs.length; i += batchSize) {
    const chunk = pairs.slice(i, i + batchSize);
    const batch = makeBatch(chunk, options.padId ?? 0);
    try {
      const lp = sequenceLogProbs(model, batch);
      const values = lp.dataSync();
      lp.dispose();
      for (let j = 0; j < chunk.length; j++) out.push({ logprob: values[j], tokens: chunk[j].response.length });
    } finally {
      batch.dispose();
    }
  }
  return out;
}
