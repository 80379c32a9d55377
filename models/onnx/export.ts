/**
 * Writing a policy to a `.onnx` file that any ONNX runtime can serve: the "causal-lm" graph (HF Optimum's
 * decoder-with-past interface, see graph.ts) with the weights as initializers, and the config in the metadata.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { PolicyGraphKind } from "./blocks.js";
import { cacheShape, serializePolicy } from "./graph.js";
import { type PolicySource, resolveSource } from "./source.js";

/** What `exportPolicy` wrote. */
export interface ExportResult {
  file: string;
  /** Size of the file. */
  bytes: number;
  kind: PolicyGraphKind;
  family: string;
  /** Graph input names, in order. */
  inputs: string[];
  /** Graph output names, in order. */
  outputs: string[];
}

/**
 * Exports `source` (a model directory, loaded model, tfjs model or raw weights) to `file`, creating its folder.
 * @param options.kind "causal-lm" (default, for serving) or the engine's own "step" / "score" graphs.
 */
export function exportPolicy(source: PolicySource, file: string, options: { kind?: PolicyGraphKind } = {}): ExportResult {
  const kind = options.kind ?? "causal-lm";
  const { config, weights } = resolveSource(source);
  const bytes = serializePolicy(config, weights, { kind });
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, bytes);
  const { layers } = cacheShape(config);
  const cache = (prefix: string) => Array.from({ length: layers }, (_, i) => [`${prefix}.${i}.key`, `${prefix}.${i}.value`]).flat();
  const inputs =
    kind === "score" ? ["input_ids", "attention_mask", "targets", "response_mask"] : ["input_ids", "attention_mask", "position_ids", ...cache("past_key_values")];
  const outputs = kind === "score" ? ["logprob"] : ["logits", ...cache("present")];
  return { file, bytes: bytes.length, kind, family: config.model_type, inputs, outputs };
}
