
import { loadOracleSession, type ModelDirConfig, readModelDir, type TokenRow } from "./model-dir.js";
import { bradleyTerryMatrix } from "../../lib/sppo/bradley-terry.js";
import type { Comparison } from "./oracle.js";
import { type OnnxOracleOptions, OnnxSessionOracle } from "./onnx-oracle.js";
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

export class RewardOnnxOracle extends OnnxSessionOracle {
  static async load(options: OnnxOracleOptions): Promise<RewardOnnxOracle> {
    const { dir, config, encoder } = readModelDir(options.modelDir, "reward");
    const outputNames = config.output_name ? [config.output_name] : ["rewards", "logits"];
    const loaded = await loadOracleSession(dir, { outputNames, intraOpThreads: options.intraOpThreads, inWorker: options.runInWorker });
    return new RewardOnnxOracle(loaded, encoder, config, { backend: "reward-onnx", dir, pairwise: false }, options);
  }

  async compare(prompt: string, candidates: readonly string[]): Promise<Comparison> {
    const { rows, truncatedTexts } = rewardRows(this.encoder, this.config, prompt, candidates);
    const rewards = await this.runBatched(rows);
    return { matrix: bradleyTerryMatrix(rewards), truncatedTexts };
  }
}
