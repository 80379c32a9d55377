/**
 * Win-rate estimation from one prompt's K×K comparison of its K sampled responses (DESIGN §2 step 3).
 *
 * Two input forms, two estimators:
 * - `winRatesFromPreferences(P)` (the paper's, the default): P is a matrix of *probabilities*,
 *   P_ij = P(y_i ≻ y_j | x) with P_ij + P_ji = 1 and P_ii = 1/2. P̂_i = (1/K) Σ_j P_ij, the self term j = i
 *   included as in the official code (it adds 1/(2K) to every entry, so P̂ lies in [1/(2K), 1 − 1/(2K)]).
 * - `winRatesFromLogits(C)` (the official code's score collapse): C is a matrix of raw pairwise *logits*,
 *   C_ij = logit of "y_i beats y_j" as a pairwise model such as PairRM emits it, not necessarily antisymmetric
 *   (PairRM sees (i, j) and (j, i) as different inputs); the diagonal is ignored. Scores
 *   s_i = (1/K) Σ_{j≠i} (C_ij − C_ji) (the diagonal term of the mean is 0 by construction, so the divisor is K), are
 *   re-expanded as P_ij = σ(s_i − s_j) and averaged as above.
 *
 * Run: imported by the pipeline and the optimizer; tests in test/lib/sppo/winrate.test.ts.
 */
import { bradleyTerryMatrix } from "./bradley-terry.js";

/** Which estimator turns the oracle's matrix into win rates (see the file header). */
export type WinRateMode = "matrix" | "score_collapse";

/** Tolerance for P_ij + P_ji = 1 and P_ii = 1/2. @default 1e-6 */
export const PREFERENCE_TOLERANCE = 1e-6;

function checkSquare(m: readonly (readonly number[])[], name: string): number {
  if (!Array.isArray(m) || m.length === 0) throw new TypeError(`${name}: must be a non-empty square matrix`);
  const k = m.length;
  for (let i = 0; i < k; i++) {
    const row = m[i];
    if (!Array.isArray(row)) throw new TypeError(`${name}[${i}]: must be an array (row ${i} of a ${k}×${k} matrix)`);
    if (row.length !== k) throw new TypeError(`${name}[${i}]: has ${row.length} entries, expected ${k} (the matrix must be square)`);
  }
  return k;
}

/**
 * Throws a TypeError naming the first entry that breaks the rules of a preference matrix: square, entries finite
 * in [0, 1], P_ii = 1/2 and P_ij + P_ji = 1 (each within `tolerance`).
 */
export function checkPreferenceMatrix(P: readonly (readonly number[])[], name = "P", tolerance = PREFERENCE_TOLERANCE): void {
  const k = checkSquare(P, name);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j < k; j++) {
      const v = P[i][j];
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > 1) {
        // JSON.stringify would print NaN and ±Infinity as null.
        throw new TypeError(`${name}[${i}][${j}]: must be a probability in [0, 1], got ${typeof v === "number" ? String(v) : JSON.stringify(v)}`);
      }
    }
  }
  for (let i = 0; i < k; i++) {
    if (Math.abs(P[i][i] - 0.5) > tolerance) throw new TypeError(`${name}[${i}][${i}]: the diagonal must be 1/2, got ${P[i][i]}`);
    for (let j = i + 1; j < k; j++) {
      const sum = P[i][j] + P[j][i];
      if (Math.abs(sum - 1) > tolerance) {
        throw new TypeError(`${name}[${i}][${j}] + ${name}[${j}][${i}] must be 1 (constant-sum), got ${P[i][j]} + ${P[j][i]} = ${sum}`);
      }
    }
  }
}

/** The paper's estimate P̂_i = (1/K) Σ_j P_ij, self term included. P must be a valid preference matrix (checked). */
export function winRatesFromPreferences(P: readonly (readonly number[])[]): number[] {
  checkPreferenceMatrix(P);
  const k = P.length;
  return P.map((row) => row.reduce((a, b) => a + b, 0) / k);
}

/** The official code's scores s_i = (1/K) Σ_{j≠i} (C_ij − C_ji) from a K×K logit matrix (diagonal ignored). */
export function scoresFromLogits(C: readonly (readonly number[])[]): number[] {
  const k = checkSquare(C, "C");
  const s = new Array<number>(k).fill(0);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j < k; j++) {
      if (i === j) continue;
      const a = C[i][j];
      const b = C[j][i];
      if (!Number.isFinite(a)) throw new TypeError(`C[${i}][${j}]: must be a finite logit, got ${a}`);
      if (!Number.isFinite(b)) throw new TypeError(`C[${j}][${i}]: must be a finite logit, got ${b}`);
      s[i] += a - b;
    }
    s[i] /= k;
  }
  return s;
}

/** Win rates by the official score collapse: P̂ of σ(s_i − s_j) with s from `scoresFromLogits`. */
export function winRatesFromLogits(C: readonly (readonly number[])[]): number[] {
  return winRatesFromPreferences(bradleyTerryMatrix(scoresFromLogits(C)));
}

/**
 * Win rates by the chosen mode: "matrix" expects the probability matrix P, "score_collapse" the logit matrix C.
 */
export function estimateWinRates(matrix: readonly (readonly number[])[], mode: WinRateMode = "matrix"): number[] {
  return mode === "matrix" ? winRatesFromPreferences(matrix) : winRatesFromLogits(matrix);
}
