/**
 * The oracle core: request validation, the matrix check, and the synthetic judges (the intransitive one cycles).
 * Run: node --import tsx --test test/services/oracle/oracle.test.ts
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, RpcError } from "../../../lib/errors.js";
import { sigmoid } from "../../../lib/sppo/bradley-terry.js";
import { checkedOracle, checkMatrix, type Oracle, validateComparison } from "../../../services/oracle/oracle.js";
import { ABSTAIN_MARGIN, cycleEquilibrium, cycleMargin, SyntheticOracle } from "../../../services/oracle/synthetic.js";
import { defaultEta, exploitability, parsePreferenceGame, runExactSppo } from "../../../lib/sppo/nash.js";

const rejectsWith = (code: Code, pattern: RegExp) => (err: unknown) => {
  assert.ok(err instanceof RpcError, `expected an RpcError, got ${err}`);
  assert.equal(err.code, code);
  assert.match(err.message, pattern);
  return true;
};

describe("validateComparison", () => {
  it("names the bad field", () => {
    assert.deepEqual(validateComparison("p", ["a"], 4), { field: "candidates", reason: "needs at least 2 candidates, got 1" });
    assert.equal(validateComparison("p", ["a", "b", "c", "d", "e"], 4)?.field, "candidates");
    assert.match(validateComparison("p", ["a", "b", "c", "d", "e"], 4)?.reason ?? "", /at most 4 candidates/);
    assert.deepEqual(validateComparison("p", ["a", "  "], 4), { field: "candidates[1]", reason: "must not be empty" });
    assert.deepEqual(validateComparison("", ["a", "b"], 4), { field: "prompt", reason: "must not be empty" });
    assert.equal(validateComparison("p", ["a", "b"], 4), undefined);
  });
});

describe("checkMatrix", () => {
  it("accepts a preference matrix and rejects each kind of bad one", () => {
    checkMatrix([[0.5, 0.8], [0.2, 0.5]], 2);
    assert.throws(() => checkMatrix([[0.5, Number.NaN], [Number.NaN, 0.5]], 2), rejectsWith(Code.INTERNAL, /P\[0\]\[1\] = NaN is not finite/));
    assert.throws(() => checkMatrix([[0.5, 0.8], [0.3, 0.5]], 2), rejectsWith(Code.INTERNAL, /P\[0\]\[1\] \+ P\[1\]\[0\] = 1\.1/));
    assert.throws(() => checkMatrix([[0.4, 0.8], [0.2, 0.5]], 2), rejectsWith(Code.INTERNAL, /P\[0\]\[0\] = 0\.4, not 1\/2/));
    assert.throws(() => checkMatrix([[0.5, 1.5], [-0.5, 0.5]], 2), rejectsWith(Code.INTERNAL, /outside \[0, 1\]/));
    assert.throws(() => checkMatrix([[0.5, 0.5]], 2), rejectsWith(Code.INTERNAL, /1 rows for K = 2/));
  });
});

describe("checkedOracle", () => {
  const fake = (matrix: number[][]): Oracle => ({
    compare: async () => ({ matrix, truncatedTexts: 0 }),
    describe: () => ({ backend: "fake", model: "fake", maxCandidates: 3, pairwise: true }),
    close: async () => {},
  });

  it("validates requests before and matrices after the backend", async () => {
    const oracle = checkedOracle(fake([[0.5, Number.NaN], [Number.NaN, 0.5]]));
    await assert.rejects(oracle.compare("p", ["a", "b", "c", "d"]), rejectsWith(Code.INVALID_ARGUMENT, /^candidates: at most 3/));
    await assert.rejects(oracle.compare("p", ["a", "b"]), rejectsWith(Code.INTERNAL, /not finite/));
    await oracle.close();
    await assert.rejects(oracle.compare("p", ["a", "b"]), rejectsWith(Code.UNAVAILABLE, /closed/));
  });
});

describe("synthetic judges", () => {
  it("synthetic-intransitive: GOOD ≻ NEUTRAL ≻ BAD ≻ GOOD, a cycle no Bradley-Terry model fits", async () => {
    const oracle = checkedOracle(new SyntheticOracle("synthetic-intransitive", 8, 2));
    const { matrix } = await oracle.compare("describe the cat.", ["the cat is kind.", "the cat is big.", "the cat is rude."]);
    const p = 1 / (1 + Math.exp(-2)); // one adjective each: margin ±1
    assert.ok(Math.abs(matrix[0][1] - p) < 1e-12); // kind ≻ big
    assert.ok(Math.abs(matrix[1][2] - p) < 1e-12); // big ≻ rude
    assert.ok(Math.abs(matrix[2][0] - p) < 1e-12); // rude ≻ kind
    // Bradley-Terry would need r0 > r1 > r2 > r0.
    assert.ok(matrix[0][1] > 0.5 && matrix[1][2] > 0.5 && matrix[2][0] > 0.5);
    assert.equal(oracle.describe().pairwise, true);
    assert.match(oracle.describe().backend, /^synthetic-/);
  });

  it("synthetic-intransitive: mixed responses use the mean over adjective pairs", () => {
    // a = {GOOD: 1, BAD: 1}, b = {NEUTRAL: 2}: GOOD beats NEUTRAL (+2), NEUTRAL beats BAD (−2) → 0 / (2·2)
    assert.equal(cycleMargin([1, 0, 1], [0, 2, 0]), 0);
    // a = {GOOD: 2}, b = {NEUTRAL: 1, BAD: 1}: +2 (GOOD vs NEUTRAL) − 2 (BAD beats GOOD) → 0
    assert.equal(cycleMargin([2, 0, 0], [0, 1, 1]), 0);
    // a = {GOOD: 1}, b = {NEUTRAL: 3, BAD: 1}: +3 − 1 = 2, / (1·4)
    assert.equal(cycleMargin([1, 0, 0], [0, 3, 1]), 0.5);
    // No adjective: loses to any response that names one, ties with another abstention.
    assert.equal(cycleMargin([0, 0, 0], [1, 0, 0]), -ABSTAIN_MARGIN);
    assert.equal(cycleMargin([0, 2, 1], [0, 0, 0]), ABSTAIN_MARGIN);
    assert.equal(cycleMargin([0, 0, 0], [0, 0, 0]), 0);
  });

  it("synthetic-intransitive: abstaining (no adjective) is not an equilibrium of the judge's game", async () => {
    // The tabular game the judge defines on a prompt's responses: one per cycle group, a balanced mix, a skewed mix,
    // and two abstentions.
    const actions = ["the cat is kind.", "the cat is big.", "the cat is rude.", "the cat is kind, big and rude.", "the cat is kind and big.", "the cat.", "it is a cat."];
    const abstain = 5;
    const { matrix } = await checkedOracle(new SyntheticOracle("synthetic-intransitive", 8, 2)).compare("describe the cat.", actions);
    const game = parsePreferenceGame({ actions, P: matrix }, "the judge's game");
    const pure = (i: number) => actions.map((_, j) => (j === i ? 1 : 0));
    // Against a policy that always abstains, any adjective wins with σ(2 · 1): exploitability σ(2) − ½ ≈ 0.38,
    // where a tie with everything would have made it 0 (an equilibrium).
    assert.ok(Math.abs(exploitability(game.P, pure(abstain)) - (sigmoid(2 * ABSTAIN_MARGIN) - 0.5)) < 1e-12);
    assert.ok(Math.abs(exploitability(game.P, pure(abstain + 1)) - (sigmoid(2) - 0.5)) < 1e-12);
    // Strictly dominated: the uniform mix of the three groups does better than abstaining against every response,
    // so no equilibrium plays it.
    const mix = [1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0];
    for (let j = 0; j < actions.length; j++) {
      const mixAgainst = mix.reduce((acc, w, i) => acc + w * game.P[i][j], 0);
      assert.ok(mixAgainst > game.P[abstain][j] + 0.1, `mix vs ${actions[j]}: ${mixAgainst} against abstaining's ${game.P[abstain][j]}`);
    }
    // The cycle's mix is an equilibrium (nothing beats it), and SPPO's exact update finds one without abstaining.
    assert.ok(Math.abs(exploitability(game.P, mix)) < 1e-12);
    const run = runExactSppo(game, { iterations: 2000, eta: defaultEta(actions.length, 2000) });
    assert.ok(run.exploitability < 0.02, `exploitability of SPPO's average policy: ${run.exploitability}`);
    assert.ok(run.averagePolicy[abstain] + run.averagePolicy[abstain + 1] < 0.01, `abstaining keeps ${run.averagePolicy[abstain]} + ${run.averagePolicy[abstain + 1]}`);
  });

  it("synthetic-intransitive with unequal margins: the equilibrium moves off the even mix, abstaining stays out", async () => {
    const margins = [0.25, 1, 3] as const; // GOOD over NEUTRAL, NEUTRAL over BAD, BAD over GOOD
    // a = {GOOD: 1, BAD: 1} against b = {NEUTRAL: 1}: GOOD beats NEUTRAL (+0.25), NEUTRAL beats BAD (−1) → −0.75 / 2
    assert.equal(cycleMargin([1, 0, 1], [0, 1, 0], margins), -0.375);
    assert.equal(cycleMargin([0, 0, 2], [1, 0, 0], margins), 3);
    const oracle = checkedOracle(new SyntheticOracle("synthetic-intransitive", 8, 2, margins));
    const actions = ["the cat is kind.", "the cat is big.", "the cat is rude.", "the cat."];
    const { matrix } = await oracle.compare("describe the cat.", actions);
    assert.ok(Math.abs(matrix[0][1] - sigmoid(0.5)) < 1e-12 && Math.abs(matrix[1][2] - sigmoid(2)) < 1e-12 && Math.abs(matrix[2][0] - sigmoid(6)) < 1e-12);
    assert.match(oracle.describe().model, /margins 0\.25 \/ 1 \/ 3/);
    // Hand-derived: with a = σ(2·0.25) − ½, b = σ(2·1) − ½, c = σ(2·3) − ½, the mix ∝ (b, c, a) leaves no group an edge.
    const [a, b, c] = [sigmoid(0.5) - 0.5, sigmoid(2) - 0.5, sigmoid(6) - 0.5];
    const expected = [b, c, a].map((x) => x / (a + b + c));
    const equilibrium = cycleEquilibrium(margins, 2);
    for (let g = 0; g < 3; g++) assert.ok(Math.abs(equilibrium[g] - expected[g]) < 1e-12);
    const game = parsePreferenceGame({ actions, P: matrix }, "the weighted judge's game");
    assert.ok(Math.abs(exploitability(game.P, [...equilibrium, 0])) < 1e-12, "the formula's mix is an equilibrium of the judge's game");
    assert.ok(exploitability(game.P, [1 / 3, 1 / 3, 1 / 3, 0]) > 0.08, "the even mix is not");
    const run = runExactSppo(game, { iterations: 4000, eta: defaultEta(actions.length, 4000) });
    assert.ok(run.averagePolicy[3] < 0.01, `abstaining keeps ${run.averagePolicy[3]}`);
    for (let g = 0; g < 3; g++) assert.ok(Math.abs(run.averagePolicy[g] - equilibrium[g]) < 0.03, `SPPO's average ${run.averagePolicy} against ${equilibrium}`);
    assert.throws(() => new SyntheticOracle("synthetic-intransitive", 8, 2, [1, 0, 1]), /margins must be positive/);
  });

  it("synthetic-adjectives: GOOD − BAD + on-subject, Bradley-Terry", async () => {
    const oracle = checkedOracle(new SyntheticOracle("synthetic-adjectives", 8, 1));
    const { matrix } = await oracle.compare("tell me about the dog.", ["the dog is kind and warm.", "the cat is kind.", "the dog is rude."]);
    // scores: 2 + 1 = 3; 1 − 1 = 0; −1 + 1 = 0
    assert.ok(Math.abs(matrix[0][1] - sigmoid(3)) < 1e-12);
    assert.equal(matrix[1][2], 0.5);
    assert.equal(oracle.describe().pairwise, false);
  });
});
