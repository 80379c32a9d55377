/**
 * The constant-sum preference game on a finite action set (DESIGN §2, "Theory"): the exact SPPO update, its
 * sampled square-loss version, and iterative DPO/IPO fits on the same samples, with the exploitability of their
 * average policies. `sppo nash` (cli/commands/nash.ts) prints and plots what these return; docs/algorithm.md
 * describes each procedure step by step.
 *
 * Definitions, with P_ij = P(a_i ≻ a_j), P + Pᵀ = 1 (all-ones), P_ii = ½:
 *   P(a_i ≻ π) = (Pπ)_i,   P(π ≻ π) = πᵀPπ = ½,
 *   exploitability(π) = max_i P(a_i ≻ π) − ½ ≥ 0, zero exactly at a Nash equilibrium (the paper's duality gap
 *   max_π P(π ≻ π̄) − min_π P(π ≺ π̄) is twice this in a constant-sum game).
 *
 * Run: `sppo nash --matrix examples/nash/rps.json --iterations 1000`; tests in test/lib/sppo/nash.test.ts.
 */
import { Rng } from "../rng.js";
import { selectChosenRejected } from "./selection.js";
import { PREFERENCE_TOLERANCE } from "./winrate.js";
import { kindError } from "../errors.js";

/** A finite preference game as read from `{"actions": [...], "P": [[...]], "initial_policy"?: [...]}`. */
export interface PreferenceGame {
  actions: string[];
  /** P[i][j] = P(a_i ≻ a_j). */
  P: number[][];
  /** π_1, the policy the iterations start from. @default uniform */
  initialPolicy: number[];
}

/**
 * Validates and converts parsed JSON into a game. Errors name the entry and its actions, e.g.
 * `rps.json: P[0][1] + P[1][0] (rock vs paper) must be 1, got 0.7 + 0.4 = 1.1`.
 */
export function parsePreferenceGame(data: unknown, source = "matrix"): PreferenceGame {
  const fail = (msg: string): never => {
    throw kindError("game-file", `${source}: ${msg}`);
  };
  if (typeof data !== "object" || data === null || Array.isArray(data)) fail('expected an object {"actions": [...], "P": [[...]]}');
  const obj = data as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!["actions", "P", "initial_policy"].includes(key)) fail(`unknown field "${key}" (expected actions, P, initial_policy)`);
  }
  const actions = obj.actions;
  if (!Array.isArray(actions)) fail('"actions" must be an array of action names');
  const names = actions as unknown[];
  if (names.length < 2) fail(`"actions" must name at least 2 actions, got ${names.length}`);
  names.forEach((a, i) => {
    if (typeof a !== "string" || a.length === 0) fail(`actions[${i}] must be a non-empty string, got ${JSON.stringify(a)}`);
    if (names.indexOf(a) !== i) fail(`actions[${i}] "${a}" repeats actions[${names.indexOf(a)}]`);
  });
  const n = names.length;
  const acts = names as string[];
  const P = obj.P;
  if (!Array.isArray(P)) fail('"P" must be an array of rows');
  const rows = P as unknown[];
  if (rows.length !== n) fail(`"P" has ${rows.length} rows but there are ${n} actions`);
  rows.forEach((row, i) => {
    if (!Array.isArray(row)) fail(`P[${i}] (${acts[i]}) must be an array`);
    if ((row as unknown[]).length !== n) fail(`P[${i}] (${acts[i]}) has ${(row as unknown[]).length} entries, expected ${n} (P must be square)`);
    (row as unknown[]).forEach((v, j) => {
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > 1) {
        fail(`P[${i}][${j}] (${acts[i]} vs ${acts[j]}) must be a probability in [0, 1], got ${JSON.stringify(v)}`);
      }
    });
  });
  const M = rows as number[][];
  for (let i = 0; i < n; i++) {
    if (Math.abs(M[i][i] - 0.5) > PREFERENCE_TOLERANCE) fail(`P[${i}][${i}] (${acts[i]} vs itself) must be 0.5, got ${M[i][i]}`);
    for (let j = i + 1; j < n; j++) {
      const sum = M[i][j] + M[j][i];
      if (Math.abs(sum - 1) > PREFERENCE_TOLERANCE) {
        fail(`P[${i}][${j}] + P[${j}][${i}] (${acts[i]} vs ${acts[j]}) must be 1, got ${M[i][j]} + ${M[j][i]} = ${sum}`);
      }
    }
  }
  let initial = new Array<number>(n).fill(1 / n);
  if (obj.initial_policy !== undefined) {
    const ip = obj.initial_policy;
    if (!Array.isArray(ip) || ip.length !== n) fail(`"initial_policy" must be an array of ${n} probabilities`);
    const p = ip as unknown[];
    p.forEach((v, i) => {
      if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
        fail(`initial_policy[${i}] (${acts[i]}) must be a positive number (every action needs support), got ${JSON.stringify(v)}`);
      }
    });
    const total = (p as number[]).reduce((a, b) => a + b, 0);
    if (Math.abs(total - 1) > 1e-6) fail(`"initial_policy" must sum to 1, got ${total}`);
    initial = (p as number[]).map((x) => x / total);
  }
  return { actions: acts, P: M.map((r) => [...r]), initialPolicy: initial };
}

/** (Pπ)_i = P(a_i ≻ π) for every action i. */
export function preferenceAgainst(P: readonly (readonly number[])[], pi: readonly number[]): number[] {
  return P.map((row) => row.reduce((acc, p, j) => acc + p * pi[j], 0));
}

/** max_i P(a_i ≻ π) − ½: how much a best response beats π by; 0 at a Nash equilibrium. */
export function exploitability(P: readonly (readonly number[])[], pi: readonly number[]): number {
  return Math.max(...preferenceAgainst(P, pi)) - 0.5;
}

/**
 * η = √(8 ln n / T), the step that minimises Hedge's regret bound ln(n)/η + ηT/8 for gains in [0, 1] started
 * uniform: Θ(1/√T) as Theorem 4.1 asks.
 */
export function defaultEta(actions: number, iterations: number): number {
  if (actions < 2) throw new RangeError("defaultEta: need at least 2 actions");
  if (!(iterations >= 1)) throw new RangeError("defaultEta: need at least 1 iteration");
  return Math.sqrt((8 * Math.log(actions)) / iterations);
}

/**
 * Hedge's guarantee for the exact update: after T rounds from π_1,
 *   exploitability(π̄_T) ≤ (max_i ln(1/π_1(i)) / η + ηT/8) / T,
 * because Σ_t (Pπ_t)_i − Σ_t π_tᵀPπ_t is Hedge's regret against action i (gains (Pπ_t) ∈ [0, 1]) and
 * π_tᵀPπ_t = ½. With π_1 uniform and the default η this is √(ln n / (2T)).
 */
export function hedgeBound(initialPolicy: readonly number[], eta: number, iterations: number): number {
  const worst = Math.max(...initialPolicy.map((p) => Math.log(1 / p)));
  return (worst / eta + (eta * iterations) / 8) / iterations;
}

/** Rounds at which the trace records the average policy: every t ≤ 10, then about `perDecade` per decade, and T. */
export function traceSteps(iterations: number, perDecade = 20): number[] {
  const out = new Set<number>();
  for (let t = 1; t <= Math.min(10, iterations); t++) out.add(t);
  for (let e = 1; 10 ** e <= iterations; e += 1 / perDecade) out.add(Math.min(iterations, Math.round(10 ** e)));
  out.add(iterations);
  return [...out].sort((a, b) => a - b);
}

export interface TracePoint {
  /** Rounds so far. */
  t: number;
  /** Exploitability of the average of π_1..π_t. */
  exploitability: number;
}

/** What one procedure produced after T rounds. */
export interface NashRun {
  /** π̄_T = (1/T) Σ_{t=1..T} π_t. */
  averagePolicy: number[];
  /** π_{T+1}, the policy the T-th update produced. */
  lastPolicy: number[];
  /** exploitability(π̄_T). */
  exploitability: number;
  /** exploitability(π_{T+1}): the last iterate need not converge (it cycles on intransitive games). */
  lastExploitability: number;
  trace: TracePoint[];
}

function softmax(logits: readonly number[]): number[] {
  const m = Math.max(...logits);
  const e = logits.map((x) => Math.exp(x - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

function logSoftmax(logits: readonly number[]): number[] {
  const m = Math.max(...logits);
  const lse = m + Math.log(logits.reduce((acc, x) => acc + Math.exp(x - m), 0));
  return logits.map((x) => x - lse);
}

/** Runs `update` T times from π_1, averaging the policies it plays and tracing the average's exploitability. */
function iterate(game: PreferenceGame, iterations: number, update: (logPi: number[], t: number) => number[]): NashRun {
  if (!Number.isInteger(iterations) || iterations < 1) throw new RangeError(`iterations must be a positive integer, got ${iterations}`);
  const n = game.actions.length;
  const steps = new Set(traceSteps(iterations));
  const sum = new Array<number>(n).fill(0);
  let logPi = game.initialPolicy.map(Math.log);
  const trace: TracePoint[] = [];
  for (let t = 1; t <= iterations; t++) {
    const pi = softmax(logPi);
    for (let i = 0; i < n; i++) sum[i] += pi[i];
    if (steps.has(t)) trace.push({ t, exploitability: exploitability(game.P, sum.map((s) => s / t)) });
    logPi = logSoftmax(update(logPi, t));
  }
  const averagePolicy = sum.map((s) => s / iterations);
  const lastPolicy = softmax(logPi);
  return {
    averagePolicy,
    lastPolicy,
    exploitability: exploitability(game.P, averagePolicy),
    lastExploitability: exploitability(game.P, lastPolicy),
    trace,
  };
}

/** The exact SPPO update (multiplicative weights): log π_{t+1} = log π_t + η P(· ≻ π_t) − log Z_t. */
export function runExactSppo(game: PreferenceGame, options: { iterations: number; eta: number }): NashRun {
  const { eta } = options;
  if (!(eta > 0)) throw new RangeError(`eta must be positive, got ${eta}`);
  return iterate(game, options.iterations, (logPi) => {
    const g = preferenceAgainst(game.P, softmax(logPi));
    return logPi.map((l, i) => l + eta * g[i]);
  });
}

export type SampledAlgorithm = "sppo" | "dpo" | "ipo";

export interface SampledOptions {
  algorithm: SampledAlgorithm;
  iterations: number;
  /** η of the SPPO target; β = 1/η for DPO/IPO. */
  eta: number;
  /** K, actions sampled from π_t per round. @default 5 (the paper's K) */
  samples?: number;
  seed?: number;
  /** Gradient-descent steps on the tabular logits per round. @default 50 */
  innerSteps?: number;
  /** Gradient-descent step size. @default 0.25 (below 2/λ_max of the square losses' Hessians, which is ≥ 0.5) */
  stepSize?: number;
}

/** Statistics of a sampled run beyond `NashRun`. */
export interface SampledRun extends NashRun {
  /** Rounds whose samples gave no training signal (DPO/IPO: the chosen and rejected sample were the same action). */
  skippedRounds: number;
  /** Mean over rounds of the round's final loss. */
  meanFinalLoss: number;
}

/**
 * The sampled procedures, one round each (docs/algorithm.md "sppo nash"):
 *  1. draw y_1..y_K ~ π_t; P̂_k = (1/K) Σ_j P[y_k][y_j] (the pipeline's estimator, self term included);
 *  2. θ ← log π_t (tabular logits), reference log π_t;
 *  3. `innerSteps` steps of gradient descent on the round's loss, with Δ_a = log softmax(θ)_a − log π_t(a):
 *     sppo: (1/K) Σ_k (Δ_{y_k} − η(P̂_k − ½))²  (eq. 4.7 on all K samples)
 *     dpo:  −log σ(β(Δ_w − Δ_l)),  ipo: (Δ_w − Δ_l − 1/(2β))²,  w = argmax P̂, l = argmin P̂, β = 1/η;
 *  4. π_{t+1} = softmax(θ).
 */
export function runSampled(game: PreferenceGame, options: SampledOptions): SampledRun {
  const { algorithm, eta } = options;
  const K = options.samples ?? 5;
  const innerSteps = options.innerSteps ?? 50;
  const lr = options.stepSize ?? 0.25;
  if (!(eta > 0)) throw new RangeError(`eta must be positive, got ${eta}`);
  if (!Number.isInteger(K) || K < 2) throw new RangeError(`samples must be an integer ≥ 2, got ${K}`);
  const beta = 1 / eta;
  const rng = new Rng(options.seed ?? 0);
  const n = game.actions.length;
  let skippedRounds = 0;
  let lossSum = 0;
  const run = iterate(game, options.iterations, (logPi) => {
    const pi = softmax(logPi);
    const ys = Array.from({ length: K }, () => rng.categorical(pi));
    const winRates = ys.map((yk) => ys.reduce((acc, yj) => acc + game.P[yk][yj], 0) / K);
    const theta = [...logPi];
    const grad = new Array<number>(n);
    let loss = 0;
    if (algorithm === "sppo") {
      const targets = winRates.map((p) => eta * (p - 0.5));
      for (let s = 0; s <= innerSteps; s++) {
        const logQ = logSoftmax(theta);
        const q = logQ.map(Math.exp);
        grad.fill(0);
        loss = 0;
        for (let k = 0; k < K; k++) {
          const r = logQ[ys[k]] - logPi[ys[k]] - targets[k];
          loss += (r * r) / K;
          // ∂/∂θ_a of log softmax(θ)_y = 1[a = y] − q_a.
          for (let a = 0; a < n; a++) grad[a] += ((2 * r) / K) * ((a === ys[k] ? 1 : 0) - q[a]);
        }
        if (s < innerSteps) for (let a = 0; a < n; a++) theta[a] -= lr * grad[a];
      }
    } else {
      const { chosen, rejected } = selectChosenRejected(winRates);
      const w = ys[chosen];
      const l = ys[rejected];
      if (w === l) {
        skippedRounds++;
        return theta;
      }
      for (let s = 0; s <= innerSteps; s++) {
        // Δ_w − Δ_l: the normaliser cancels.
        const z = theta[w] - theta[l] - (logPi[w] - logPi[l]);
        let dz: number;
        if (algorithm === "dpo") {
          const bz = beta * z;
          loss = Math.max(-bz, 0) + Math.log1p(Math.exp(-Math.abs(bz)));
          dz = -beta / (1 + Math.exp(bz)); // −β σ(−βz)
        } else {
          const d = z - 1 / (2 * beta);
          loss = d * d;
          dz = 2 * d;
        }
        if (s < innerSteps) {
          theta[w] -= lr * dz;
          theta[l] += lr * dz;
        }
      }
    }
    lossSum += loss;
    return theta;
  });
  return { ...run, skippedRounds, meanFinalLoss: lossSum / options.iterations };
}
