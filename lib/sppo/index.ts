/**
 * The SPPO math shared by the pipeline and the optimizer (docs/algorithm.md):
 *
 * Win rates:   `estimateWinRates(matrix, "matrix" | "score_collapse")` — P̂_i = (1/K) Σ_j P_ij from a probability
 *              matrix (paper), or from a logit matrix via s_i = mean_j (C_ij − C_ji), P_ij = σ(s_i − s_j) (official)
 * Selection:   `selectChosenRejected(winRates)` → { chosen, rejected }; `selectResponses(winRates, mode)`
 * Losses:      `preferenceLoss(name, delta, winRate, eta)` on tfjs tensors; `sppoLoss`, `sppoHardLoss`, `dpoLoss`, `ipoLoss`
 * Game:        `parsePreferenceGame`, `runExactSppo`, `runSampled`, `exploitability`, `defaultEta`, `hedgeBound`
 * Utilities:   `lineChartSvg` (the seeded `Rng` is lib/rng.ts)
 */
export { dpoLoss, ipoLoss, isPairwise, LOSS_NAMES, type LossName, preferenceLoss, sppoHardLoss, sppoLoss, sppoTarget } from "./losses.js";
export {
  defaultEta,
  exploitability,
  hedgeBound,
  type NashRun,
  type PreferenceGame,
  parsePreferenceGame,
  preferenceAgainst,
  runExactSppo,
  runSampled,
  type SampledAlgorithm,
  type SampledOptions,
  type SampledRun,
  type TracePoint,
  traceSteps,
} from "./nash.js";
export { bradleyTerryMatrix, matrixFromUpper, sigmoid } from "./bradley-terry.js";
export { type ChosenRejected, type PairSelectionMode, selectChosenRejected, selectResponses } from "./selection.js";
export {
  checkPreferenceMatrix,
  estimateWinRates,
  PREFERENCE_TOLERANCE,
  scoresFromLogits,
  type WinRateMode,
  winRatesFromLogits,
  winRatesFromPreferences,
} from "./winrate.js";
