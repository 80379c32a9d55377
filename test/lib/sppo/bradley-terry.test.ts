/** The logistic function and Bradley-Terry matrices (run: node --import tsx --test test/lib/sppo/bradley-terry.test.ts). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { bradleyTerryMatrix, matrixFromUpper, sigmoid } from "../../../lib/sppo/bradley-terry.js";

test("sigmoid stays finite and symmetric at the extremes", () => {
  assert.equal(sigmoid(0), 0.5);
  assert.equal(sigmoid(-1000), 0);
  assert.equal(sigmoid(1000), 1);
  assert.ok(Math.abs(sigmoid(0.3) + sigmoid(-0.3) - 1) < 1e-15);
  // σ(ln 3) = 3/4 exactly in real arithmetic.
  assert.ok(Math.abs(sigmoid(Math.log(3)) - 0.75) < 1e-15);
});

test("matrixFromUpper mirrors the upper triangle exactly, with 1/2 on the diagonal", () => {
  const m = matrixFromUpper(3, (i, j) => (i + 1) / (i + j + 2));
  assert.deepEqual(m[0], [0.5, 1 / 3, 1 / 4]);
  assert.equal(m[2][1], 1 - m[1][2]);
  assert.equal(m[1][0], 1 - 1 / 3);
  assert.ok(Number.isNaN(matrixFromUpper(2, () => Number.NaN)[1][0]), "NaN stays NaN for the caller's check");
});

test("bradleyTerryMatrix is σ(s_i − s_j), constant-sum to the last bit", () => {
  const bt = bradleyTerryMatrix([1, 0, -1]);
  assert.equal(bt[0][2], 1 / (1 + Math.exp(-2)));
  assert.ok(Math.abs(bt[0][1] - 1 / (1 + Math.exp(-1))) < 1e-15);
  for (let i = 0; i < 3; i++) {
    assert.equal(bt[i][i], 0.5);
    for (let j = i + 1; j < 3; j++) assert.equal(bt[j][i], 1 - bt[i][j]);
  }
  assert.deepEqual(bradleyTerryMatrix([]), []);
});
