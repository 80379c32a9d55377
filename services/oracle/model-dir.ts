/**
 * Loading an ONNX oracle model directory: `model.onnx`, `tokenizer.json` and the optional `oracle_config.json`.
 * Everything is checked here, at start-up: a missing or corrupt file, a model without the `input_ids` /
 * `attention_mask` int64 inputs or the float output, or a bad `oracle_config.json` fails with a message naming the
 * file and what is wrong, instead of failing the first request.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { z } from "zod";
import { Code, RpcError } from "../../lib/errors.js";

/** `oracle_config.json`: optional; snake_case so that the Python export script can write it as is. */
export const modelDirConfigSchema = z
  .object({
    /** "pairwise" (PairRM form) or "reward" (one scalar per response); checked against the configured backend. */
    kind: z.enum(["pairwise", "reward"]).optional(),
    /** Shown by Describe. @default the directory name */
    model_name: z.string().optional(),
    /** PairRM's prefix tokens. */
    source_prefix: z.string().default("<|source|>"),
    candidate1_prefix: z.string().default("<|candidate1|>"),
    candidate2_prefix: z.string().default("<|candidate2|>"),
    /** Tokens of the prompt (prefix and special tokens included), as in PairRM. @default 1224 */
    source_max_length: z.number().int().positive().default(1224),
    /** Tokens of each candidate (prefix and special tokens included), as in PairRM. @default 412 */
    candidate_max_length: z.number().int().positive().default(412),
    /**
     * PairRM gives the candidates what the prompt leaves unused: each candidate may take
     * ⌊(source_max_length + 2·candidate_max_length − prompt tokens) / 2⌋ tokens. false keeps candidate_max_length.
     * @default true
     */
    share_unused_source_budget: z.boolean().default(true),
    /** Id written into padding positions (their attention_mask is 0). @default the tokenizer's pad token, else 0 */
    pad_token_id: z.number().int().nonnegative().optional(),
    /** Name of the model's output. @default "logits" (pairwise); "rewards" or "logits" (reward) */
    output_name: z.string().optional(),
  })
  .strict();

export type ModelDirConfig = z.infer<typeof modelDirConfigSchema>;

/** A start-up failure: FAILED_PRECONDITION, printed by the CLI as one line. */
export function modelError(message: string, cause?: unknown): RpcError {
  return Object.assign(new RpcError(Code.FAILED_PRECONDITION, message, { cause }), { userFacing: true });
}

/** Reads and validates `oracle_config.json` (defaults when absent). */
export function readModelDirConfig(dir: string): ModelDirConfig {
  const path = join(dir, "oracle_config.json");
  if (!existsSync(path)) return modelDirConfigSchema.parse({});
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw modelError(`${path}: not valid JSON (${(err as Error).message})`, err);
  }
  const parsed = modelDirConfigSchema.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw modelError(`${path}: field ${issue.path.join(".") || "(top level)"}: ${issue.message}`);
  }
  return parsed.data;
}

export interface SessionSpec {
  /** Output names accepted, first match wins. */
  outputNames: readonly string[];
  /** Thread count; 0 lets onnxruntime choose. */
  intraOpThreads: number;
}

export interface LoadedSession {
  session: ort.InferenceSession;
  /** The output that carries the logits/rewards. */
  outputName: string;
  /** Other int64 inputs the model takes (e.g. token_type_ids), fed with zeros. */
  zeroInputs: string[];
}

const REQUIRED_INPUTS = ["input_ids", "attention_mask"] as const;

/** Creates the session for `model.onnx` in `dir` and checks its inputs and outputs. */
export async function loadOracleSession(dir: string, spec: SessionSpec): Promise<LoadedSession> {
  const path = join(dir, "model.onnx");
  if (!existsSync(path)) throw modelError(`${path}: the model file is missing`);
  let session: ort.InferenceSession;
  try {
    const options: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: "all" };
    if (spec.intraOpThreads > 0) options.intraOpNumThreads = spec.intraOpThreads;
    session = await ort.InferenceSession.create(path, options);
  } catch (err) {
    throw modelError(`${path}: onnxruntime cannot load it (corrupt or unsupported): ${(err as Error).message.split("\n")[0]}`, err);
  }
  try {
    return { session, ...checkSignature(path, session, spec) };
  } catch (err) {
    await session.release();
    throw err;
  }
}

function checkSignature(path: string, session: ort.InferenceSession, spec: SessionSpec): Omit<LoadedSession, "session"> {
  const inputs = new Map(session.inputMetadata.map((m) => [m.name, m]));
  for (const name of REQUIRED_INPUTS) {
    const meta = inputs.get(name);
    if (!meta) throw modelError(`${path}: the model has no input "${name}" (inputs: ${session.inputNames.join(", ")}); an oracle model takes input_ids and attention_mask`);
    if (!meta.isTensor || meta.type !== "int64") {
      throw modelError(`${path}: input "${name}" must be an int64 tensor, it is ${meta.isTensor ? meta.type : "not a tensor"}`);
    }
    if (meta.shape.length !== 0 && meta.shape.length !== 2) {
      throw modelError(`${path}: input "${name}" must have shape [batch, length], it has [${meta.shape.join(", ")}]`);
    }
  }
  const zeroInputs: string[] = [];
  for (const meta of session.inputMetadata) {
    if ((REQUIRED_INPUTS as readonly string[]).includes(meta.name)) continue;
    if (meta.name === "token_type_ids" && meta.isTensor && meta.type === "int64") {
      zeroInputs.push(meta.name);
      continue;
    }
    throw modelError(`${path}: unexpected input "${meta.name}"; an oracle model takes input_ids, attention_mask (and optionally token_type_ids)`);
  }
  const outputName = spec.outputNames.find((n) => session.outputNames.includes(n));
  if (!outputName) {
    throw modelError(`${path}: the model has no output named ${spec.outputNames.map((n) => `"${n}"`).join(" or ")} (outputs: ${session.outputNames.join(", ")})`);
  }
  const out = session.outputMetadata.find((m) => m.name === outputName)!;
  if (!out.isTensor || (out.type !== "float32" && out.type !== "float64")) {
    throw modelError(`${path}: output "${outputName}" must be a float32 or float64 tensor, it is ${out.isTensor ? out.type : "not a tensor"}`);
  }
  if (out.shape.length > 2 || (out.shape.length === 2 && out.shape[1] !== 1)) {
    throw modelError(`${path}: output "${outputName}" must have shape [batch] or [batch, 1], it has [${out.shape.join(", ")}]`);
  }
  return { outputName, zeroInputs };
}

/** Padded int64 tensors of a batch of token id rows. */
export function padBatch(rows: readonly (readonly number[])[], padId: number): { ids: ort.Tensor; mask: ort.Tensor; length: number } {
  const length = Math.max(1, ...rows.map((r) => r.length));
  const ids = new BigInt64Array(rows.length * length).fill(BigInt(padId));
  const mask = new BigInt64Array(rows.length * length);
  for (const [b, row] of rows.entries()) {
    for (const [t, id] of row.entries()) {
      ids[b * length + t] = BigInt(id);
      mask[b * length + t] = 1n;
    }
  }
  return { ids: new ort.Tensor("int64", ids, [rows.length, length]), mask: new ort.Tensor("int64", mask, [rows.length, length]), length };
}

/** Runs a batch and returns one number per row from the checked output ([batch] or [batch, 1]). */
export async function runRows(loaded: LoadedSession, rows: readonly (readonly number[])[], padId: number): Promise<number[]> {
  const { ids, mask } = padBatch(rows, padId);
  const feeds: Record<string, ort.Tensor> = { input_ids: ids, attention_mask: mask };
  for (const name of loaded.zeroInputs) feeds[name] = new ort.Tensor("int64", new BigInt64Array(ids.size), ids.dims);
  const out = await loaded.session.run(feeds, [loaded.outputName]);
  const result = out[loaded.outputName];
  if (result.size !== rows.length) {
    throw new RpcError(Code.INTERNAL, `the model's output "${loaded.outputName}" has shape [${result.dims.join(", ")}] for a batch of ${rows.length}`);
  }
  return Array.from(result.data as Float32Array | Float64Array, Number);
}
