/**
 * What flows between the loop's stages. Messages from the contracts are used as they are (gen/); these records
 * only carry them along with the prompt they belong to.
 */
import type { Candidate } from "../gen/sppo/v1/generator_pb.js";
import type { Prompt } from "./prompts.js";

/** K responses sampled for one prompt from one policy version. */
export interface CandidateSet {
  prompt: Prompt;
  promptTokenIds: number[];
  candidates: Candidate[];
  policyVersion: number;
  /** The checksum the version was pinned with ("" when not pinned by checksum). */
  policySha256?: string;
}

/** ... with the oracle's K×K preference matrix, P[i][j] = P(y_i ≻ y_j | x). */
export interface ComparedSet extends CandidateSet {
  matrix: number[][];
}

/** ... with each response's estimated win rate P̂ and reference log-prob log π_t(y|x). */
export interface ScoredSet extends ComparedSet {
  winRates: number[];
  referenceLogprobs: number[];
}
