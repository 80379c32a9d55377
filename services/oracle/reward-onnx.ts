/**
 * Backend "reward-onnx": a scalar reward model (Bradley-Terry). Each response is scored once, as the text pair
 * (prompt, response) in the tokenizer's pair form ([CLS] prompt [SEP] response [SEP] for BERT-like tokenizers, the
 * input of a Hugging Face sequence-classification reward model), the prompt cut to `source_max_length` tokens and the
 * response to `candidate_max_length`; the model outputs one reward per row (`rewards` or `logits`, [batch] or
 * [batch, 1]) and P_ij = σ(r_i − r_j). Such a model cannot express intransitive preferences (Describe says
 * pairwise = false).
 */
import { basename } from "node:path";
import type { Batcher } from "../../lib/streams/batcher.js";
import { type LoadedSession, loadOracleSession, type ModelDirConfig, readModelDir, runRows, type TokenRow } from "./model-dir.js";
import { bradleyTerryMatrix } from "../../lib/sppo/bradley-terry.js";
import type { Comparison, Oracle, OracleDescription } from "./oracle.js";
import { type OnnxOracleOptions, padIdOf, rowBatcher } from "./pairwise-onnx.js";
import type { TokenEncoder } from "./token-encoder.js";

/** Token ids of the K reward rows of one request, with its truncation count. */
export function rewardRows(encoder: TokenEncoder, config: ModelDirConfig, prompt: string, candidates: readonly string[]): { rows: TokenRow[]; truncatedTexts: number } {
  let promptTruncated = false;
  let truncatedTexts = 0;
  const rows = candidates.map((candidate) => {
    const pair = encoder.encodePair(prompt, config.source_max_length, candidate, config.candidate_max_length);
    promptTruncated ||= pair.truncatedFirst;
    if (pair.truncatedSecond) truncatedTexts++;
    return [pair.ids];
  });
  return { rows, truncatedTexts: truncatedTexts + (promptTruncated ? 1 : 0) };
}

export class RewardOnnxOracle implements Oracle {
  private readonly batcher: Batcher<TokenRow, number>;

  private constructor(
    private readonly loaded: LoadedSession,
    readonly encoder: TokenEncoder,
    readonly config: ModelDirConfig,
    private readonly description: OracleDescription,
    options: OnnxOracleOptions,
  ) {
    const padId = padIdOf(config, encoder);
    this.batcher = rowBatcher((rows) => runRows(loaded, rows, padId), options.batching);
  }

  static async load(options: OnnxOracleOptions): Promise<RewardOnnxOracle> {
    const { dir, config, encoder } = readModelDir(options.modelDir, "reward");
    const outputNames = config.output_name ? [config.output_name] : ["rewards", "logits"];
    const loaded = await loadOracleSession(dir, { outputNames, intraOpThreads: options.intraOpThreads, inWorker: options.runInWorker });
    const description: OracleDescription = {
      backend: "reward-onnx",
      model: config.model_name ?? basename(dir),
      maxCandidates: options.maxCandidates,
      pairwise: false,
    };
    return new RewardOnnxOracle(loaded, encoder, config, description, options);
  }

  async compare(prompt: string, candidates: readonly string[]): Promise<Comparison> {
    const { rows, truncatedTexts } = rewardRows(this.encoder, this.config, prompt, candidates);
    const rewards = await this.batcher.submitAll(rows);
    return { matrix: bradleyTerryMatrix(rewards), truncatedTexts };
  }

  describe(): OracleDescription {
    return { ...this.description };
  }

  async close(): Promise<void> {
    await this.batcher.close();
    await this.loaded.session.release();
  }
}
