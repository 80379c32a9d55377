import { map, type OperatorFunction } from "rxjs";
import { estimateWinRates as estimate, type WinRateMode } from "../lib/sppo/winrate.js";
import type { ComparedSet, ScoredSet } from "./types.js";

/** log(p / (1 − p)), with p kept 1e-7 away from 0 and 1 so that certain preferences stay finite. */
function logit(p: number): number {
  const q = Math.min(Math.max(p, 1e-7), 1 - 1e-7);
  return Math.log(q / (1 - q));
}

/**
 * Each response's estimated win rate P̂ against the current policy (DESIGN §2 step 3), and its reference log-prob
 * log π_t(y|x): the generator's summed log-prob at temperature 1, taken under the very policy that sampled it.
 * (With `referenceLogprobs: "rescore"` the loop overwrites these with Generator.Score results afterwards.)
 *
 * @param mode "matrix" (paper: P̂_i = mean_j P_ij) or "score_collapse" (official code)
 */
export function estimateWinRates(mode: WinRateMode): OperatorFunction<ComparedSet, ScoredSet> {
  return map((set) => ({
    ...set,
    // The score collapse works on PairRM's logits: the oracle's probabilities are mapped back to logits first.
    winRates: mode === "matrix" ? estimate(set.matrix, mode) : estimate(set.matrix.map((row) => row.map(logit)), mode),
    referenceLogprobs: set.candidates.map((c) => c.logprob),
  }));
}
