/**
 * Builds the configured oracle backend, wrapped by checkedOracle (validation in, matrix check out). Every start-up
 * problem — model directory, tokenizer, ONNX signature, unreachable remote — surfaces here, before serving.
 */
import type { OracleConfig } from "../../lib/config/oracle.js";
import type { ClientConfig } from "../../lib/config/server.js";
import { type Oracle, checkedOracle } from "./oracle.js";
import { PairwiseOnnxOracle } from "./pairwise-onnx.js";
import { RemoteOracle } from "./remote.js";
import { RewardOnnxOracle } from "./reward-onnx.js";
import { SyntheticOracle } from "./synthetic.js";

export interface CreateOracleOptions {
  /** Client settings for the remote backend. */
  client?: Partial<ClientConfig>;
}

/** The backend `config.backend` names, ready to compare. */
export async function createOracle(config: OracleConfig, options: CreateOracleOptions = {}): Promise<Oracle> {
  const onnx = {
    modelDir: config.modelDir,
    maxCandidates: config.maxCandidates,
    batching: config.batching,
    intraOpThreads: config.intraOpThreads,
    runInWorker: config.runInWorker,
  };
  switch (config.backend) {
    case "pairwise-onnx":
      return checkedOracle(await PairwiseOnnxOracle.load(onnx));
    case "reward-onnx":
      return checkedOracle(await RewardOnnxOracle.load(onnx));
    case "remote":
      return checkedOracle(
        await RemoteOracle.connect({
          target: config.remote.target,
          maxCandidates: config.maxCandidates,
          connectTimeoutMs: config.remote.connectTimeoutMs,
          requestTimeoutMs: config.remote.requestTimeoutMs,
          client: options.client,
        }),
      );
    case "synthetic-adjectives":
    case "synthetic-intransitive":
      return checkedOracle(new SyntheticOracle(config.backend, config.maxCandidates, config.syntheticStrength, config.syntheticCycleMargins));
  }
}
