/** Shared helpers of the models/onnx tests: random tiny models of every variant, feeds for the causal-lm graph. */
import * as ort from "onnxruntime-node";
import { cacheShape } from "../../../models/onnx/index.js";
import { createRng } from "../../../lib/rng.js";
import { type ModelConfig, paramShapes, type RawTensor } from "../../../models/index.js";

/**
 * Random weights for `config` (normal × 0.2; norm weights 1 + normal × 0.1; biases non-zero), so that every weight,
 * bias included, moves the logits and a wrong wiring shows.
 */
export function randomWeights(config: ModelConfig, seed: number): Map<string, RawTensor> {
  const out = new Map<string, RawTensor>();
  paramShapes(config).forEach(([name, shape], index) => {
    const rng = createRng(seed, index);
    const data = new Float32Array(shape.reduce((a, d) => a * d, 1));
    const isNorm = /norm|ln_/.test(name) && name.endsWith(".weight");
    for (let i = 0; i < data.length; i++) data[i] = isNorm ? 1 + 0.1 * rng.normal() : 0.2 * rng.normal();
    out.set(name, { shape, data });
  });
  return out;
}

/** Feeds of the causal-lm graph for full rows `ids` (no padding, no past). */
export function fullFeeds(config: ModelConfig, ids: number[][]): Record<string, ort.Tensor> {
  const B = ids.length;
  const T = ids[0].length;
  const big = (values: number[]) => BigInt64Array.from(values, (v) => BigInt(v));
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor("int64", big(ids.flat()), [B, T]),
    attention_mask: new ort.Tensor("int64", big(new Array(B * T).fill(1)), [B, T]),
    position_ids: new ort.Tensor("int64", big(ids.flatMap((row) => row.map((_, t) => t))), [B, T]),
  };
  const { layers, kvHeads, headDim } = cacheShape(config);
  for (let i = 0; i < layers; i++) {
    feeds[`past_key_values.${i}.key`] = new ort.Tensor("float32", new Float32Array(0), [B, kvHeads, 0, headDim]);
    feeds[`past_key_values.${i}.value`] = new ort.Tensor("float32", new Float32Array(0), [B, kvHeads, 0, headDim]);
  }
  return feeds;
}
