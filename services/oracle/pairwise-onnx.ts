
import { matrixFromUpper, sigmoid } from "../../lib/sppo/bradley-terry.js";
import { loadOracleSession, type ModelDirConfig, modelError, readModelDir, runRows, type TokenRow } from "./model-dir.js";
import { type OnnxOracleOptions, OnnxSessionOracle, padIdOf } from "./onnx-oracle.js";
import type { Comparison } from "./oracle.js";
import type { TokenEncoder } from "./token-encoder.js";

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

export class PairwiseOnnxOracle extends OnnxSessionOracle {
  /** Loads and checks the model directory (see model-dir.ts); fails with FAILED_PRECONDITION naming the problem. */
  static async load(options: OnnxOracleOptions): Promise<PairwiseOnnxOracle> {
    const { dir, config, encoder } = readModelDir(options.modelDir, "pairwise");
    for (const prefix of [config.source_prefix, config.candidate1_prefix, config.candidate2_prefix]) {
      if (encoder.tokenId(prefix) === undefined) throw modelError(`${dir}/tokenizer.json: the prefix token "${prefix}" is not in the vocabulary`);
    }
    const loaded = await loadOracleSession(dir, { outputNames: [config.output_name ?? "logits"], intraOpThreads: options.intraOpThreads, inWorker: options.runInWorker });
    return new PairwiseOnnxOracle(loaded, encoder, config, { backend: "pairwise-onnx", dir, pairwise: true }, options);
  }

  async compare(prompt: string, candidates: readonly string[]): Promise<Comparison> {
    const { rows, pairs, truncatedTexts } = pairwiseRows(this.encoder, this.config, prompt, candidates);
    const logits = await this.runBatched(rows);
    const k = candidates.length;
    const logit = Array.from({ length: k }, () => new Array<number>(k).fill(0));
    for (const [r, [i, j]] of pairs.entries()) logit[i][j] = logits[r];
    return { matrix: matrixFromUpper(k, (i, j) => sigmoid((logit[i][j] - logit[j][i]) / 2)), truncatedTexts };
  }

  /** Runs pre-built rows straight through the session, without batching or matrix assembly (for the benchmark). */
  runDirect(rows: readonly TokenRow[]): Promise<number[]> {
    return runRows(this.loaded, rows, padIdOf(this.config, this.encoder));
  }
}
