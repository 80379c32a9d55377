/**
 * Writing a policy to a `.onnx` file that any ONNX runtime can serve: the "causal-lm" graph (HF Optimum's
 * decoder-with-past interface, see graph.ts) with the config in the metadata, and the weights either inside the file
 * or — past protobuf's 2 GiB limit, or when asked — in `FILE.onnx.data` beside it, by ONNX's external-data
 * convention (each initializer names the file, an offset and a length; onnxruntime, onnx.load and Optimum read it
 * from the .onnx file's folder). The weights are read from the source one tensor at a time either way.
 */
import { mkdirSync, rmSync } from "node:fs";
import { basename, dirname } from "node:path";
import { writeFileAtomic } from "../../lib/atomic.js";
import { paramShapes } from "../io.js";
import type { PolicyGraphKind } from "./blocks.js";
import { cacheShape, externalPolicyBytes, serializePolicy } from "./graph.js";
import { openSource, type PolicySource, pickParams } from "./source.js";
import { isHalfWeight, type OnnxWeightDtype, writeExternalWeights } from "./weights-file.js";

/** What `exportPolicy` wrote. */
export interface ExportResult {
  file: string;
  /** Size of the .onnx file. */
  bytes: number;
  /** The weights file beside it (external data), when there is one. */
  externalData?: string;
  /** Size of the weights file. */
  externalBytes?: number;
  kind: PolicyGraphKind;
  family: string;
  /** Storage of the weight matrices. */
  dtype: OnnxWeightDtype;
  /** Graph input names, in order. */
  inputs: string[];
  /** Graph output names, in order. */
  outputs: string[];
}

export interface ExportOptions {
  /** "causal-lm" (default, for serving) or the engine's own "step" / "score" graphs. */
  kind?: PolicyGraphKind;
  /**
   * Weights in `FILE.onnx.data` (true), inside the .onnx file (false, up to protobuf's 2 GiB), or inside when they
   * fit and beside when not ("auto"). @default "auto"
   */
  externalData?: boolean | "auto";
  /** Storage of the weight matrices: "float32" or "float16". @default "float32" */
  dtype?: OnnxWeightDtype;
}

/** protobuf refuses messages of 2 GiB or more; the graph's structure needs a little room beside the weights. */
const INLINE_LIMIT_BYTES = 2 ** 31 - 2 ** 24;

/**
 * Exports `source` (a model directory, loaded model, tfjs model or raw weights) to `file`, creating its folder.
 * Throws RangeError when `externalData: false` and the weights do not fit in one protobuf.
 */
export function exportPolicy(source: PolicySource, file: string, options: ExportOptions = {}): ExportResult {
  const kind = options.kind ?? "causal-lm";
  const dtype = options.dtype ?? "float32";
  const opened = openSource(source);
  try {
    const { config } = opened;
    const weightBytes = paramShapes(config).reduce((n, [, shape]) => n + shape.reduce((a, d) => a * d, 1) * (isHalfWeight(shape, dtype) ? 2 : 4), 0);
    const mode = options.externalData ?? "auto";
    const external = mode === true || (mode === "auto" && weightBytes >= INLINE_LIMIT_BYTES);
    if (!external && weightBytes >= INLINE_LIMIT_BYTES) {
      throw new RangeError(`export: the weights are ${weightBytes} bytes, past protobuf's 2 GiB limit for one .onnx file; write them beside it (external data)`);
    }
    mkdirSync(dirname(file), { recursive: true });
    let bytes: Uint8Array;
    let externalData: string | undefined;
    let externalBytes = 0;
    if (external) {
      externalData = `${basename(file)}.data`;
      const weights = writeExternalWeights(config, opened.weights, dtype, undefined, { folder: dirname(file), name: externalData });
      externalBytes = weights.bytes;
      bytes = externalPolicyBytes(config, weights, { kind, weightDtype: dtype });
    } else {
      if (dtype !== "float32") throw new RangeError("export: float16 weights are written as external data (--external-data)");
      bytes = serializePolicy(config, pickParams(config, opened.weights, "weights"), { kind });
      rmSync(`${file}.data`, { force: true }); // a stale weights file of an earlier export would mislead
    }
    writeFileAtomic(file, bytes);
    const { layers } = cacheShape(config);
    const cache = (prefix: string) => Array.from({ length: layers }, (_, i) => [`${prefix}.${i}.key`, `${prefix}.${i}.value`]).flat();
    const inputs =
      kind === "score" ? ["input_ids", "attention_mask", "targets", "response_mask"] : ["input_ids", "attention_mask", "position_ids", ...cache("past_key_values")];
    const outputs = kind === "score" ? ["logprob"] : ["logits", ...cache("present")];
    return {
      file,
      bytes: bytes.length,
      ...(externalData ? { externalData, externalBytes } : {}),
      kind,
      family: config.model_type,
      dtype,
      inputs,
      outputs,
    };
  } finally {
    opened.close();
  }
}
