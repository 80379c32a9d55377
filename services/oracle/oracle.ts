/**
 * The preference oracle's core: the `Oracle` interface every backend implements, request validation and the check
 * every matrix passes before it is answered. Nothing here knows about gRPC; services/oracle/server.ts mounts it.
 *
 * A comparison of K candidates to one prompt is the K×K matrix P_ij = P(candidate i ≻ candidate j | prompt) with
 * P_ij + P_ji = 1, P_ii = 1/2 and every value finite in [0, 1].
 */
import { Code, invalidArgument, RpcError } from "../../lib/errors.js";
import { invalidUtf8 } from "../../lib/grpc/definition.js";

export interface Comparison {
  /** K×K, matrix[i][j] = P(candidate i ≻ candidate j). */
  matrix: number[][];
  /** How many texts (the prompt and the candidates) were cut to the model's token limits. */
  truncatedTexts: number;
}

export interface OracleDescription {
  /** Backend kind: "pairwise-onnx", "reward-onnx", "remote", "synthetic-adjectives", "synthetic-intransitive". */
  backend: string;
  /** Human-readable name of the model or judge. */
  model: string;
  /** Largest K accepted. */
  maxCandidates: number;
  /** True when preferences can be intransitive (a pairwise model or judge); false for a Bradley-Terry reward. */
  pairwise: boolean;
}

export interface Oracle {
  /**
   * The preference matrix of `candidates` for `prompt`. Rejects with an RpcError: INVALID_ARGUMENT naming the field
   * for a bad request (see `validateComparison`), INTERNAL when the model produced a non-finite or inconsistent
   * matrix; the oracle stays usable after either.
   */
  compare(prompt: string, candidates: readonly string[]): Promise<Comparison>;
  describe(): OracleDescription;
  /** Releases sessions, connections and timers; later calls fail. */
  close(): Promise<void>;
}

/** A bad field of a comparison request. */
export interface FieldIssue {
  /** Dotted path of the request field ("candidates[2]"). */
  field: string;
  reason: string;
}

/** The first problem of a request, or undefined when it is acceptable. */
export function validateComparison(prompt: string, candidates: readonly string[], maxCandidates: number): FieldIssue | undefined {
  if (prompt.trim().length === 0) return { field: "prompt", reason: "must not be empty" };
  // Bytes that were not UTF-8 arrive escaped (lib/grpc/definition.ts): refused here, naming the field.
  const promptUtf8 = invalidUtf8(prompt);
  if (promptUtf8) return { field: "prompt", reason: promptUtf8 };
  if (candidates.length < 2) return { field: "candidates", reason: `needs at least 2 candidates, got ${candidates.length}` };
  if (candidates.length > maxCandidates) {
    return { field: "candidates", reason: `at most ${maxCandidates} candidates are accepted (oracle.maxCandidates), got ${candidates.length}` };
  }
  for (const [i, candidate] of candidates.entries()) {
    if (candidate.trim().length === 0) return { field: `candidates[${i}]`, reason: "must not be empty" };
    const candidateUtf8 = invalidUtf8(candidate);
    if (candidateUtf8) return { field: `candidates[${i}]`, reason: candidateUtf8 };
  }
  return undefined;
}

/** Throws INVALID_ARGUMENT naming the field when the request is not acceptable. */
export function assertValidComparison(prompt: string, candidates: readonly string[], maxCandidates: number): void {
  const issue = validateComparison(prompt, candidates, maxCandidates);
  if (issue) throw invalidArgument(issue.field, issue.reason);
}

/** Absolute tolerance of the P_ij + P_ji = 1 and P_ii = 1/2 checks (values travel as float64). */
export const MATRIX_TOLERANCE = 1e-9;

/**
 * Checks that `matrix` is a K×K preference matrix; throws INTERNAL naming the first bad entry. A model that outputs
 * NaN or ±Inf fails here, so the request fails with a clear status instead of poisoning the win rates downstream.
 */
export function checkMatrix(matrix: readonly (readonly number[])[], k: number): void {
  const bad = (message: string) => new RpcError(Code.INTERNAL, `the oracle produced an invalid preference matrix: ${message}`);
  if (matrix.length !== k) throw bad(`${matrix.length} rows for K = ${k}`);
  for (let i = 0; i < k; i++) {
    if (matrix[i].length !== k) throw bad(`row ${i} has ${matrix[i].length} entries for K = ${k}`);
    for (let j = 0; j < k; j++) {
      const p = matrix[i][j];
      if (!Number.isFinite(p)) throw bad(`P[${i}][${j}] = ${p} is not finite (the model's output was not a number)`);
      if (p < 0 || p > 1) throw bad(`P[${i}][${j}] = ${p} is outside [0, 1]`);
    }
  }
  for (let i = 0; i < k; i++) {
    if (Math.abs(matrix[i][i] - 0.5) > MATRIX_TOLERANCE) throw bad(`P[${i}][${i}] = ${matrix[i][i]}, not 1/2`);
    for (let j = i + 1; j < k; j++) {
      const sum = matrix[i][j] + matrix[j][i];
      if (Math.abs(sum - 1) > MATRIX_TOLERANCE) throw bad(`P[${i}][${j}] + P[${j}][${i}] = ${sum}, not 1`);
    }
  }
}

/**
 * Wraps a backend so that every call is validated first and every answer is checked; the backends themselves only
 * compute. Also refuses calls after close().
 */
export function checkedOracle(inner: Oracle): Oracle {
  let closed = false;
  return {
    async compare(prompt, candidates) {
      if (closed) throw new RpcError(Code.UNAVAILABLE, "the oracle is closed");
      assertValidComparison(prompt, candidates, inner.describe().maxCandidates);
      const result = await inner.compare(prompt, candidates);
      checkMatrix(result.matrix, candidates.length);
      return result;
    },
    describe: () => inner.describe(),
    async close() {
      if (closed) return;
      closed = true;
      await inner.close();
    },
  };
}
