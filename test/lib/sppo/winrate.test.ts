/** Win-rate estimators and pair selection (run: node --import tsx --test test/lib/sppo/winrate.test.ts). */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { selectChosenRejected, selectResponses } from "../../../lib/sppo/selection.js";
import { bradleyTerryMatrix, sigmoid } from "../../../lib/sppo/bradley-terry.js";
import { checkPreferenceMatrix, estimateWinRates, scoresFromLogits, winRatesFromLogits, winRatesFromPreferences } from "../../../lib/sppo/winrate.js";

const closeAll = (a: readonly number[], b: readonly number[], tol = 1e-12) => {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= tol, `[${i}]: ${a[i]} != ${b[i]}`);
};

describe("paper estimator P̂_i = (1/K) Σ_j P_ij", () => {
  test("includes the self term ½", () => {
    // Row 0: (0.5 + 0.7 + 0.9)/3 = 0.7; row 1: (0.3 + 0.5 + 0.6)/3 = 1.4/3; row 2: (0.1 + 0.4 + 0.5)/3 = 1/3.
    const P = [
      [0.5, 0.7, 0.9],
      [0.3, 0.5, 0.6],
      [0.1, 0.4, 0.5],
    ];
    closeAll(winRatesFromPreferences(P), [0.7, 1.4 / 3, 1 / 3]);
    // The estimates of a constant-sum matrix average to ½.
    assert.ok(Math.abs(winRatesFromPreferences(P).reduce((a, b) => a + b) / 3 - 0.5) < 1e-12);
  });

  test("names the entry that breaks the rules", () => {
    assert.throws(() => checkPreferenceMatrix([[0.5, 0.7], [0.4, 0.5]]), /P\[0\]\[1\] \+ P\[1\]\[0\] must be 1/);
    assert.throws(() => checkPreferenceMatrix([[0.4, 0.6], [0.4, 0.5]]), /P\[0\]\[0\]: the diagonal must be 1\/2/);
    assert.throws(() => checkPreferenceMatrix([[0.5, 1.2], [-0.2, 0.5]]), /P\[0\]\[1\]: must be a probability/);
    assert.throws(() => checkPreferenceMatrix([[0.5, 0.5], [0.5]]), /P\[1\]: has 1 entries, expected 2/);
    assert.throws(() => checkPreferenceMatrix([]), /non-empty square/);
  });
});

describe("official score collapse", () => {
  test("s_i = (1/K) Σ_j (C_ij − C_ji), P_ij = σ(s_i − s_j)", () => {
    // C (diagonal ignored): s_0 = ((2 − (−1)) + (0.5 − 1))/3 = 2.5/3; s_1 = ((−1 − 2) + (3 − 0))/3 = 0;
    // s_2 = ((1 − 0.5) + (0 − 3))/3 = −2.5/3.
    const C = [
      [99, 2, 0.5],
      [-1, 99, 3],
      [1, 0, 99],
    ];
    const s = scoresFromLogits(C);
    closeAll(s, [2.5 / 3, 0, -2.5 / 3]);
    const P = bradleyTerryMatrix(s);
    assert.equal(P[1][1], 0.5);
    assert.ok(Math.abs(P[0][2] - sigmoid(5 / 3)) < 1e-15);
    const expected = [0, 1, 2].map((i) => (0.5 + sigmoid(s[i] - s[(i + 1) % 3]) + sigmoid(s[i] - s[(i + 2) % 3])) / 3);
    closeAll(winRatesFromLogits(C), expected);
    closeAll(estimateWinRates(C, "score_collapse"), expected);
  });
});

describe("selection", () => {
  test("argmax and argmin", () => {
    assert.deepEqual(selectChosenRejected([0.4, 0.9, 0.1, 0.6]), { chosen: 1, rejected: 2 });
    assert.deepEqual(selectResponses([0.4, 0.9, 0.1, 0.6], "chosen_rejected"), [1, 2]);
    assert.deepEqual(selectResponses([0.4, 0.9, 0.1, 0.6], "all"), [0, 1, 2, 3]);
  });
  test("ties: chosen is the first maximum, rejected the last minimum, so they differ", () => {
    assert.deepEqual(selectChosenRejected([0.5, 0.5, 0.5]), { chosen: 0, rejected: 2 });
    assert.deepEqual(selectChosenRejected([0.7, 0.7, 0.2, 0.2]), { chosen: 0, rejected: 3 });
  });
  test("one response cannot make a pair", () => {
    assert.throws(() => selectChosenRejected([0.5]), /at least 2/);
  });
});
