/**
 * Which of a prompt's K responses the loss sees (DESIGN §2 step 5): the official code keeps the chosen
 * (argmax P̂) and rejected (argmin P̂) response; "all" keeps every sample (SPPO's loss only: the pairwise losses
 * need a pair).
 *
 * Ties: argmax takes the lowest index among the maxima, argmin the highest index among the minima, so a prompt
 * whose K win rates are all equal still yields two distinct responses when K ≥ 2 (their SPPO targets are then both
 * 0 and the pair pushes nothing in the pairwise losses' direction beyond Δ_w = Δ_l). K = 1 cannot form a pair.
 */

export type PairSelectionMode = "chosen_rejected" | "all";

export interface ChosenRejected {
  /** Index of the response with the highest win rate. */
  chosen: number;
  /** Index of the response with the lowest win rate. */
  rejected: number;
}

/** The chosen (argmax) and rejected (argmin) indices of `winRates`; throws when fewer than two responses. */
export function selectChosenRejected(winRates: readonly number[]): ChosenRejected {
  if (winRates.length < 2) throw new RangeError(`pair selection needs at least 2 responses, got ${winRates.length}`);
  let chosen = 0;
  let rejected = winRates.length - 1;
  for (let i = 0; i < winRates.length; i++) {
    if (!Number.isFinite(winRates[i])) throw new TypeError(`winRates[${i}]: must be finite, got ${winRates[i]}`);
    if (winRates[i] > winRates[chosen]) chosen = i;
  }
  for (let i = winRates.length - 1; i >= 0; i--) if (winRates[i] < winRates[rejected]) rejected = i;
  return { chosen, rejected };
}

/**
 * The indices the loss uses, chosen first: [chosen, rejected] or, for "all", 0..K-1 in order.
 */
export function selectResponses(winRates: readonly number[], mode: PairSelectionMode): number[] {
  if (mode === "all") {
    if (winRates.length < 1) throw new RangeError("pair selection needs at least 1 response");
    return winRates.map((_, i) => i);
  }
  const { chosen, rejected } = selectChosenRejected(winRates);
  return [chosen, rejected];
}
