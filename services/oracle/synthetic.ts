/**
 * Synthetic judges — not models of anyone's preferences, but exact, cheap rules over the default task's little
 * language (lib/default-task/language.ts), for tests and demos. Their names start with "synthetic-".
 *
 * - "synthetic-adjectives" (transitive, Bradley-Terry): score(y) = #GOOD − #BAD + [y names the prompt's subject]
 *   − #other subjects named; P_ij = σ(strength · (score_i − score_j)). The default ONNX model computes the same score.
 * - "synthetic-intransitive": the adjective groups form the cycle GOOD ≻ NEUTRAL ≻ BAD ≻ GOOD (CYCLE). With c_y the
 *   group counts of y and n_y their sum, P_ij = σ(strength · c_iᵀ M c_j / (n_i n_j)), M the antisymmetric cycle
 *   matrix (M[a][a+1] = m_a, M[a+1][a] = −m_a; the margins m = (GOOD over NEUTRAL, NEUTRAL over BAD, BAD over GOOD)
 *   are 1 each unless given). "kind" ≻ "big" ≻ "rude" ≻ "kind": no Bradley-Terry model represents it. With equal
 *   margins the equilibrium mixes the groups evenly; unequal margins move it (see cycleEquilibrium).
 *   A response naming no adjective abstains from the game; it loses to any response that names one with margin
 *   ABSTAIN_MARGIN (and ties with another abstention). Were it to tie with everything, as a margin of 0 would make it,
 *   "say no adjective" would be an equilibrium of the game (nothing beats it) that a policy could learn instead of the
 *   cycle's mixture; losing makes abstention strictly dominated, so every equilibrium leaves it out
 *   (test/services/oracle/oracle.test.ts solves the judge's game on its responses).
 */
import { BAD, CYCLE, GOOD, SUBJECTS } from "../../lib/default-task/language.js";
import { bradleyTerryMatrix, matrixFromUpper, sigmoid } from "../../lib/sppo/bradley-terry.js";
import type { Comparison, Oracle, OracleDescription } from "./oracle.js";

const words = (text: string): string[] => text.toLowerCase().match(/[a-z]+/g) ?? [];

const GOOD_SET = new Set<string>(GOOD);
const BAD_SET = new Set<string>(BAD);
const SUBJECT_SET = new Set<string>(SUBJECTS);

/** The adjective score of a response to a prompt (see the file comment). */
export function adjectiveScore(prompt: string, response: string): number {
  const promptSubjects = new Set(words(prompt).filter((w) => SUBJECT_SET.has(w)));
  const named = new Set<string>();
  let score = 0;
  for (const w of words(response)) {
    if (GOOD_SET.has(w)) score += 1;
    else if (BAD_SET.has(w)) score -= 1;
    else if (SUBJECT_SET.has(w)) named.add(w);
  }
  for (const subject of named) score += promptSubjects.has(subject) ? 1 : -1;
  return score;
}

/** Counts of CYCLE groups (GOOD, NEUTRAL, BAD) in a text. */
export function cycleCounts(text: string): [number, number, number] {
  const counts: [number, number, number] = [0, 0, 0];
  const groups = CYCLE.map((g) => new Set<string>(g));
  for (const w of words(text)) {
    const g = groups.findIndex((set) => set.has(w));
    if (g >= 0) counts[g]++;
  }
  return counts;
}

/** How much a response naming any adjective beats one naming none: as much as one cycle group beats the next. */
export const ABSTAIN_MARGIN = 1;

/** Margins of the cycle's three wins: GOOD over NEUTRAL, NEUTRAL over BAD, BAD over GOOD. */
export type CycleMargins = readonly [number, number, number];

/** The even cycle: every win by margin 1. */
export const EVEN_CYCLE: CycleMargins = [1, 1, 1];

/**
 * c_iᵀ M c_j / (n_i n_j) for the cycle matrix M with `margins`. A side naming no adjective loses by ABSTAIN_MARGIN to
 * one that names some; two such sides tie.
 */
export function cycleMargin(a: readonly number[], b: readonly number[], margins: CycleMargins = EVEN_CYCLE): number {
  const na = a[0] + a[1] + a[2];
  const nb = b[0] + b[1] + b[2];
  if (na === 0 || nb === 0) return na === nb ? 0 : na === 0 ? -ABSTAIN_MARGIN : ABSTAIN_MARGIN;
  let margin = 0;
  for (let g = 0; g < 3; g++) {
    margin += margins[g] * (a[g] * b[(g + 1) % 3] - a[(g + 1) % 3] * b[g]); // g beats the next group
  }
  return margin / (na * nb);
}

/**
 * The equilibrium over the three one-adjective responses (GOOD, NEUTRAL, BAD) of the judge with these margins and
 * strength: for a 3-action game with A = P − ½ antisymmetric, the mix orthogonal to every row of A is
 * ∝ (A[N][B], A[B][G], A[G][N]) — each group weighted by how much the group it loses to is beaten in turn.
 */
export function cycleEquilibrium(margins: CycleMargins = EVEN_CYCLE, strength = 2): [number, number, number] {
  const w = [margins[1], margins[2], margins[0]].map((m) => sigmoid(strength * m) - 0.5);
  const total = w[0] + w[1] + w[2];
  return [w[0] / total, w[1] / total, w[2] / total];
}

export type SyntheticKind = "synthetic-adjectives" | "synthetic-intransitive";

export class SyntheticOracle implements Oracle {
  constructor(
    readonly kind: SyntheticKind,
    private readonly maxCandidates: number,
    /** P(winner) = σ(strength · margin). */
    private readonly strength = 2,
    /** The intransitive judge's margins. */
    private readonly margins: CycleMargins = EVEN_CYCLE,
  ) {
    if (!margins.every((m) => m > 0 && Number.isFinite(m))) throw new RangeError(`cycle margins must be positive, got ${margins.join(", ")}`);
  }

  async compare(prompt: string, candidates: readonly string[]): Promise<Comparison> {
    if (this.kind === "synthetic-adjectives") {
      return { matrix: bradleyTerryMatrix(candidates.map((c) => this.strength * adjectiveScore(prompt, c))), truncatedTexts: 0 };
    }
    const counts = candidates.map(cycleCounts);
    return {
      matrix: matrixFromUpper(candidates.length, (i, j) => sigmoid(this.strength * cycleMargin(counts[i], counts[j], this.margins))),
      truncatedTexts: 0,
    };
  }

  describe(): OracleDescription {
    return this.kind === "synthetic-adjectives"
      ? { backend: this.kind, model: "synthetic adjective counter (GOOD − BAD, on subject)", maxCandidates: this.maxCandidates, pairwise: false }
      : {
          backend: this.kind,
          model: `synthetic rock-paper-scissors judge (GOOD ≻ NEUTRAL ≻ BAD ≻ GOOD${this.margins.every((m) => m === 1) ? "" : `, margins ${this.margins.join(" / ")}`})`,
          maxCandidates: this.maxCandidates,
          pairwise: true,
        };
  }

  async close(): Promise<void> {}
}
