/**
 * Padded batches of (prompt, response) token sequences, the input of scoring and of the training primitives.
 * Sequences are right-padded: row b is prompt ++ response ++ padding, positions 0..len-1, padding never attended.
 * The logits at index t predict token t + 1, so `targets[b][t] = ids[b][t + 1]` and `responseMask[b][t]` is 1 exactly
 * where t + 1 is a response token (prompt tokens and padding are masked out).
 */
import * as tf from "@tensorflow/tfjs";

/** One (prompt, response) pair of token ids. The response may end with EOS (and then EOS is scored). */
export interface TokenPair {
  prompt: number[];
  response: number[];
}

/** A padded batch on the active backend; `dispose()` frees it. */
export interface TokenBatch {
  /** [B, L] int32 input ids (the last token of each row is never an input that matters). */
  ids: tf.Tensor2D;
  /** [B, L] float32: 1 for real tokens, 0 for padding. */
  attentionMask: tf.Tensor2D;
  /** [B, L] int32: the token each position predicts (0 where masked). */
  targets: tf.Tensor2D;
  /** [B, L] float32: 1 where `targets` is a response token. */
  responseMask: tf.Tensor2D;
  /** Response tokens per row. */
  responseTokens: number[];
  dispose(): void;
}

/** Writable (B, L) arrays of a right-padded batch: plain or typed arrays. */
interface PaddedRows {
  ids: { [i: number]: number };
  mask: { [i: number]: number };
  targets: { [i: number]: number };
  responseMask: { [i: number]: number };
}

/**
 * Writes `prompt` + `response` into row `b` of right-padded (B, L) arrays (padding positions are left as they are):
 * ids and a mask of 1, targets[t] = ids[t + 1], and responseMask 1 where t + 1 is a response token (the positions
 * whose targets are scored). Used by padPairs.
 */
function writePairRow(rows: PaddedRows, L: number, b: number, prompt: readonly number[], response: readonly number[]): void {
  const { ids, mask, targets, responseMask } = rows;
  const seq = [...prompt, ...response];
  for (let t = 0; t < seq.length; t++) {
    ids[b * L + t] = seq[t];
    mask[b * L + t] = 1;
    if (t + 1 < seq.length) targets[b * L + t] = seq[t + 1];
    if (t + 1 >= prompt.length && t + 1 < seq.length) responseMask[b * L + t] = 1;
  }
}

/** The flat (B, L) arrays of right-padded pairs, before they become some engine's tensors. */
export interface PaddedPairs {
  B: number;
  L: number;
  ids: Int32Array;
  mask: Float32Array;
  targets: Int32Array;
  responseMask: Float32Array;
}

/**
 * Right-pads `pairs` into flat (B, L) arrays (ids padded with `padId`); `who` names the caller in errors. Every prompt
 * needs at least one token (the response is predicted from it). Shared by makeBatch, OrtPolicy's scoring (models/onnx) and the onnxruntime train step.
 */
export function padPairs(pairs: readonly TokenPair[], padId: number, who: string): PaddedPairs {
  if (pairs.length === 0) throw new RangeError(`${who}: no pairs`);
  const B = pairs.length;
  const L = Math.max(...pairs.map((p) => p.prompt.length + p.response.length));
  const rows = { B, L, ids: new Int32Array(B * L).fill(padId), mask: new Float32Array(B * L), targets: new Int32Array(B * L), responseMask: new Float32Array(B * L) };
  pairs.forEach(({ prompt, response }, b) => {
    if (prompt.length === 0) throw new RangeError(`${who}: pair ${b} has an empty prompt (prepend BOS)`);
    writePairRow(rows, L, b, prompt, response);
  });
  return rows;
}

/** Builds a right-padded batch. Every prompt needs at least one token (the response is predicted from it). */
export function makeBatch(pairs: TokenPair[], padId = 0): TokenBatch {
  const { B, L, ids, mask, targets, responseMask } = padPairs(pairs, padId, "makeBatch");
  const batch = {
    ids: tf.tensor2d(ids, [B, L], "int32"),
    attentionMask: tf.tensor2d(mask, [B, L], "float32"),
    targets: tf.tensor2d(targets, [B, L], "int32"),
    responseMask: tf.tensor2d(responseMask, [B, L], "float32"),
    responseTokens: pairs.map((p) => p.response.length),
    dispose() {
      batch.ids.dispose();
      batch.attentionMask.dispose();
      batch.targets.dispose();
      batch.responseMask.dispose();
    },
  };
  return batch;
}
