/**
 * The logistic function and Bradley-Terry preference matrices, the one home of both: the oracles build their K×K
 * answers with them (services/oracle/), and the win-rate estimator re-expands the official code's collapsed scores
 * with them (lib/sppo/winrate.ts). Tests: test/lib/sppo/bradley-terry.test.ts.
 */

/** Logistic function σ(z) = 1/(1 + e^{−z}), written to stay finite for large |z|. */
export function sigmoid(z: number): number {
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
}

/**
 * A K×K preference matrix from its upper triangle: P_ij = prob(i, j) for i < j, P_ji = 1 − P_ij exactly (so the
 * matrix is constant-sum to the last bit), P_ii = 1/2. NaN from `prob` stays NaN, for the caller's check to catch.
 */
export function matrixFromUpper(k: number, prob: (i: number, j: number) => number): number[][] {
  const matrix = Array.from({ length: k }, () => new Array<number>(k).fill(0.5));
  for (let i = 0; i < k; i++) {
    for (let j = i + 1; j < k; j++) {
      const p = prob(i, j);
      matrix[i][j] = p;
      matrix[j][i] = 1 - p;
    }
  }
  return matrix;
}

/** Bradley-Terry: P_ij = σ(s_i − s_j) from one score per candidate (a reward, or the official code's collapsed score). */
export function bradleyTerryMatrix(scores: readonly number[]): number[][] {
  return matrixFromUpper(scores.length, (i, j) => sigmoid(scores[i] - scores[j]));
}
