/**
 * Backend "pairwise-onnx": a PairRM-compatible pairwise ONNX model.
 *
 * The model reads `<|source|>prompt <|candidate1|>first <|candidate2|>second` (three segments, each encoded and
 * truncated on its own exactly as PairRM's `tokenize_pair` does, then concatenated) and outputs `logits`, the logit
 * l(a, b) that the first candidate beats the second. Every unordered pair is scored in both orders and combined as
 *
 *     P_ij = σ((l(i, j) − l(j, i)) / 2),   P_ji = 1 − P_ij,   P_ii = 1/2
 *
 * A constant position bias b (l(a, b) = f(a, b) + b) cancels in the difference; for a model whose logit is
 * antisymmetric apart from that bias the result is exactly σ(f(i, j)). This is the paper's P_ij = σ(pairwise logit),
 * with the logit averaged over both presentation orders. The official SPPO code's
 * alternative, scores s_i = mean_j (C_ij − C_ji) re-expanded as σ(s_i − s_j), can be computed from this matrix
 * (C_ij − C_ji = 2·logit(P_ij)), so it is left to the pipeline.
 *
 * Rows of concurrent requests share ONNX runs through lib/streams/batcher.ts (one job per row: any rows may share a
 * run, and a request larger than maxBatch spans several).
 */
import { basename } from "node:path";
import { Batcher, type BatcherOptions } from "../../lib/streams/batcher.js";
import { type LoadedSession, loadOracleSession, type ModelDirConfig, modelError, readModelDir, runRows, type TokenRow } from "./model-dir.js";
import { matrixFromUpper, sigmoid } from "../../lib/sppo/bradley-terry.js";
import type { Comparison, Oracle, OracleDescription } from "./oracle.js";
import type { TokenEncoder } from "./token-encoder.js";

/** How rows of concurrent requests share ONNX runs (config oracle.batching). */
export type OracleBatching = Pick<BatcherOptions<TokenRow>, "maxBatch" | "maxWaitMs" | "maxConcurrentRuns">;

/** The batcher of an ONNX oracle: one job per row, every row compatible with every other. */
export function rowBatcher(run: (rows: TokenRow[]) => Promise<number[]>, batching: OracleBatching): Batcher<TokenRow, number> {
  return new Batcher(run, { ...batching, name: "oracle" });
}

export interface OnnxOracleOptions {
  /** The model directory. */
  modelDir: string;
  /** Largest K accepted. */
  maxCandidates: number;
  batching: OracleBatching;
  /** onnxruntime threads; 0 lets it choose. */
  intraOpThreads: number;
  /** Run the session in a worker thread. @default true */
  runInWorker?: boolean;
}

/** Pads with the config's pad id, else the tokenizer's usual pad token, else 0. */
export function padIdOf(config: ModelDirConfig, encoder: TokenEncoder): number {
  if (config.pad_token_id !== undefined) return config.pad_token_id;
  for (const token of ["[PAD]", "<pad>", "<|pad|>"]) {
    const id = encoder.tokenId(token);
    if (id !== undefined) return id;
  }
  return 0;
}

/** Token ids of the pairwise rows of one request, with its truncation count. */
export interface PairwiseRows {
  /** rows[r] (segments: source, first, second) for the ordered pair pairs[r] = [first, second]. */
  rows: TokenRow[];
  pairs: [number, number][];
  truncatedTexts: number;
}

/** Builds the K(K−1) ordered-pair rows of a request in PairRM's input form. */
export function pairwiseRows(encoder: TokenEncoder, config: ModelDirConfig, prompt: string, candidates: readonly string[]): PairwiseRows {
  const source = encoder.encode(config.source_prefix + prompt, config.source_max_length);
  const totalBudget = config.source_max_length + 2 * config.candidate_max_length;
  const candidateBudget = config.share_unused_source_budget
    ? Math.floor((totalBudget - source.ids.length) / 2)
    : config.candidate_max_length;
  let truncatedTexts = source.truncated ? 1 : 0;
  const asFirst = candidates.map((c) => encoder.encode(config.candidate1_prefix + c, candidateBudget));
  const asSecond = candidates.map((c) => encoder.encode(config.candidate2_prefix + c, candidateBudget));
  for (let i = 0; i < candidates.length; i++) if (asFirst[i].truncated || asSecond[i].truncated) truncatedTexts++;
  const rows: TokenRow[] = [];
  const pairs: [number, number][] = [];
  for (let i = 0; i < candidates.length; i++) {
    for (let j = 0; j < candidates.length; j++) {
      if (i === j) continue;
      pairs.push([i, j]);
      rows.push([source.ids, asFirst[i].ids, asSecond[j].ids]);
    }
  }
  return { rows, pairs, truncatedTexts };
}

export class PairwiseOnnxOracle implements Oracle {
  private readonly batcher: Batcher<TokenRow, number>;

  private constructor(
    private readonly loaded: LoadedSession,
    readonly encoder: TokenEncoder,
    readonly config: ModelDirConfig,
    private readonly description: OracleDescription,
    batching: OracleBatching,
  ) {
    const padId = padIdOf(config, encoder);
    this.batcher = rowBatcher((rows) => runRows(loaded, rows, padId), batching);
  }

  /** Loads and checks the model directory (see model-dir.ts); fails with FAILED_PRECONDITION naming the problem. */
  static async load(options: OnnxOracleOptions): Promise<PairwiseOnnxOracle> {
    const { dir, config, encoder } = readModelDir(options.modelDir, "pairwise");
    for (const prefix of [config.source_prefix, config.candidate1_prefix, config.candidate2_prefix]) {
      if (encoder.tokenId(prefix) === undefined) throw modelError(`${dir}/tokenizer.json: the prefix token "${prefix}" is not in the vocabulary`);
    }
    const loaded = await loadOracleSession(dir, { outputNames: [config.output_name ?? "logits"], intraOpThreads: options.intraOpThreads, inWorker: options.runInWorker });
    const description: OracleDescription = {
      backend: "pairwise-onnx",
      model: config.model_name ?? basename(dir),
      maxCandidates: options.maxCandidates,
      pairwise: true,
    };
    return new PairwiseOnnxOracle(loaded, encoder, config, description, options.batching);
  }

  async compare(prompt: string, candidates: readonly string[]): Promise<Comparison> {
    const { rows, pairs, truncatedTexts } = pairwiseRows(this.encoder, this.config, prompt, candidates);
    const logits = await this.batcher.submitAll(rows);
    const k = candidates.length;
    const logit = Array.from({ length: k }, () => new Array<number>(k).fill(0));
    for (const [r, [i, j]] of pairs.entries()) logit[i][j] = logits[r];
    return { matrix: matrixFromUpper(k, (i, j) => sigmoid((logit[i][j] - logit[j][i]) / 2)), truncatedTexts };
  }

  /** Runs pre-built rows straight through the session, without batching or matrix assembly (for the benchmark). */
  runDirect(rows: readonly TokenRow[]): Promise<number[]> {
    return runRows(this.loaded, rows, padIdOf(this.config, this.encoder));
  }

  get batchStats() {
    return this.batcher.stats;
  }

  describe(): OracleDescription {
    return { ...this.description };
  }

  async close(): Promise<void> {
    await this.batcher.close();
    await this.loaded.session.release();
  }
}
