/**
 * Loading an ONNX oracle model directory: `model.onnx`, `tokenizer.json` and the optional `oracle_config.json`.
 * Everything is checked here, at start-up: a missing or corrupt file, a model without the `input_ids` /
 * `attention_mask` int64 inputs or the float output, or a bad `oracle_config.json` fails with a message naming the
 * file and what is wrong, instead of failing the first request.
 */
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import * as ort from "onnxruntime-node";
import { z } from "zod";
import { Code, kindError, RpcError } from "../../lib/errors.js";
import { TokenEncoder } from "./token-encoder.js";
import { type OracleSession, type RunOutput, type SessionIO, WorkerSession } from "./worker-session.js";

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

/** A bad oracle model directory: a "model-format" error (FAILED_PRECONDITION), printed by the CLI as one line. */
export function modelError(message: string, cause?: unknown): RpcError {
  return kindError("model-format", message, { cause });
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

/** A model directory's checked config and tokenizer, as both ONNX backends start from them. */
export interface ModelDir {
  /** The directory, resolved to an absolute path. */
  dir: string;
  config: ModelDirConfig;
  encoder: TokenEncoder;
}

/**
 * Reads `oracle_config.json` and `tokenizer.json` of `modelDir` for the backend of kind `kind`; fails with
 * FAILED_PRECONDITION when the config says the other kind (naming the backend to use) or the tokenizer cannot be read.
 */
export function readModelDir(modelDir: string, kind: "pairwise" | "reward"): ModelDir {
  const dir = resolve(modelDir);
  const config = readModelDirConfig(dir);
  const otherKind = kind === "pairwise" ? "reward" : "pairwise";
  if (config.kind === otherKind) throw modelError(`${dir}/oracle_config.json says kind "${otherKind}"; use backend "${otherKind}-onnx" for it`);
  let encoder: TokenEncoder;
  try {
    encoder = TokenEncoder.fromDirectory(dir);
  } catch (err) {
    throw modelError((err as Error).message, err);
  }
  return { dir, config, encoder };
}

export interface SessionSpec {
  /** Output names accepted, first match wins. */
  outputNames: readonly string[];
  /** Thread count; 0 lets onnxruntime choose. */
  intraOpThreads: number;
  /** Run the session in a worker thread (see session-worker.mjs) rather than on the calling thread. @default true */
  inWorker?: boolean;
}

/** A session on the calling thread (its runs block the event loop while they last). */
export class InlineSession implements OracleSession {
  constructor(readonly session: ort.InferenceSession) {}
  get io(): SessionIO {
    return this.session;
  }
  async run(feeds: Record<string, { data: BigInt64Array; dims: number[] }>, output: string): Promise<RunOutput> {
    const tensors = Object.fromEntries(Object.entries(feeds).map(([name, f]) => [name, new ort.Tensor("int64", f.data, f.dims)]));
    const result = (await this.session.run(tensors, [output]))[output];
    return { data: result.data as Float32Array | Float64Array, dims: [...result.dims] };
  }
  release(): Promise<void> {
    return this.session.release();
  }
}

export interface LoadedSession {
  session: OracleSession;
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
  let session: OracleSession;
  try {
    const options: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: "all" };
    if (spec.intraOpThreads > 0) options.intraOpNumThreads = spec.intraOpThreads;
    session = spec.inWorker === false ? new InlineSession(await ort.InferenceSession.create(path, options)) : await WorkerSession.create(path, options);
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

function checkSignature(path: string, session: OracleSession, spec: SessionSpec): Omit<LoadedSession, "session"> {
  const inputs = new Map(session.io.inputMetadata.map((m) => [m.name, m]));
  for (const name of REQUIRED_INPUTS) {
    const meta = inputs.get(name);
    if (!meta) throw modelError(`${path}: the model has no input "${name}" (inputs: ${session.io.inputNames.join(", ")}); an oracle model takes input_ids and attention_mask`);
    if (!meta.isTensor || meta.type !== "int64") {
      throw modelError(`${path}: input "${name}" must be an int64 tensor, it is ${meta.isTensor ? meta.type : "not a tensor"}`);
    }
    if (meta.shape.length !== 0 && meta.shape.length !== 2) {
      throw modelError(`${path}: input "${name}" must have shape [batch, length], it has [${meta.shape.join(", ")}]`);
    }
  }
  const zeroInputs: string[] = [];
  for (const meta of session.io.inputMetadata) {
    if ((REQUIRED_INPUTS as readonly string[]).includes(meta.name)) continue;
    if (meta.name === "token_type_ids" && meta.isTensor && meta.type === "int64") {
      zeroInputs.push(meta.name);
      continue;
    }
    throw modelError(`${path}: unexpected input "${meta.name}"; an oracle model takes input_ids, attention_mask (and optionally token_type_ids)`);
  }
  const outputName = spec.outputNames.find((n) => session.io.outputNames.includes(n));
  if (!outputName) {
    throw modelError(`${path}: the model has no output named ${spec.outputNames.map((n) => `"${n}"`).join(" or ")} (outputs: ${session.io.outputNames.join(", ")})`);
  }
  const out = session.io.outputMetadata.find((m) => m.name === outputName)!;
  if (!out.isTensor || (out.type !== "float32" && out.type !== "float64")) {
    throw modelError(`${path}: output "${outputName}" must be a float32 or float64 tensor, it is ${out.isTensor ? out.type : "not a tensor"}`);
  }
  if (out.shape.length > 2 || (out.shape.length === 2 && out.shape[1] !== 1)) {
    throw modelError(`${path}: output "${outputName}" must have shape [batch] or [batch, 1], it has [${out.shape.join(", ")}]`);
  }
  return { outputName, zeroInputs };
}

/** One model input row as segments whose concatenation is the row (PairRM rows: source, first, second). */
export type TokenRow = readonly (readonly number[])[];

const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Padded int64 tensors of a batch of rows (right padding, mask 0 there). Token ids are written as 32-bit halves of
 * the int64 buffer (BigInt per element costs more than the model run for small models); ids must be < 2^31.
 */
export function padBatch(rows: readonly TokenRow[], padId: number): { ids: BigInt64Array; mask: BigInt64Array; dims: [number, number] } {
  const lengths = rows.map((row) => row.reduce((n, segment) => n + segment.length, 0));
  const length = Math.max(1, ...lengths);
  const ids = new BigInt64Array(rows.length * length);
  const mask = new BigInt64Array(rows.length * length);
  if (littleEndian) {
    const ids32 = new Int32Array(ids.buffer); // (B, L, 2): [low, high] words
    const mask32 = new Int32Array(mask.buffer);
    for (const [b, row] of rows.entries()) {
      let t = b * length;
      for (const segment of row) {
        for (const id of segment) {
          ids32[2 * t] = id;
          mask32[2 * t] = 1;
          t++;
        }
      }
      for (const end = (b + 1) * length; t < end; t++) ids32[2 * t] = padId;
    }
  } else {
    ids.fill(BigInt(padId));
    for (const [b, row] of rows.entries()) {
      let t = b * length;
      for (const segment of row) {
        for (const id of segment) {
          ids[t] = BigInt(id);
          mask[t++] = 1n;
        }
      }
    }
  }
  return { ids, mask, dims: [rows.length, length] }; // (B, L) each
}

/** Runs a batch and returns one number per row from the checked output ([batch] or [batch, 1]). */
export async function runRows(loaded: LoadedSession, rows: readonly TokenRow[], padId: number): Promise<number[]> {
  const { ids, mask, dims } = padBatch(rows, padId);
  const feeds: Record<string, { data: BigInt64Array; dims: number[] }> = { input_ids: { data: ids, dims }, attention_mask: { data: mask, dims } };
  for (const name of loaded.zeroInputs) feeds[name] = { data: new BigInt64Array(ids.length), dims };
  const out = await loaded.session.run(feeds, loaded.outputName);
  if (out.data.length !== rows.length) {
    throw new RpcError(Code.INTERNAL, `the model's output "${loaded.outputName}" has shape [${out.dims.join(", ")}] for a batch of ${rows.length}`);
  }
  return Array.from(out.data, Number);
}
