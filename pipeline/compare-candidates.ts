import { create } from "@bufbuild/protobuf";
import { catchError, from, map, mergeMap, type OperatorFunction } from "rxjs";
import { type CompareRequest, CompareRequestSchema, type CompareResponse } from "../gen/sppo/v1/oracle_pb.js";
import { checkPreferenceMatrix } from "../lib/sppo/winrate.js";
import { Code, RpcError } from "../lib/errors.js";
import type { Multiplexer } from "../lib/grpc/multiplexer.js";
import { skipBadInput } from "./skip-bad-input.js";
import type { CandidateSet, ComparedSet } from "./types.js";

export interface CompareCandidatesConfig {
  /** The oracle's Compare stream. */
  oracle: Multiplexer<CompareRequest, CompareResponse>;
  /** Candidate sets in flight. */
  concurrency: number;
  /** Called for a set the oracle refused (bad input, e.g. an empty response); the stage drops it and goes on. */
  onSkip?: (set: CandidateSet, error: RpcError) => void;
}

/** Row-major K×K probabilities as a matrix, checked: square, P_ij + P_ji = 1, P_ii = ½, finite, in [0, 1]. */
export function toMatrix(response: CompareResponse, k: number, where: string): number[][] {
  if (response.k !== k || response.probabilities.length !== k * k) {
    throw new RpcError(Code.INTERNAL, `${where}: the oracle answered a ${response.k}×${response.k} matrix with ${response.probabilities.length} values for ${k} candidates`);
  }
  const matrix = Array.from({ length: k }, (_, i) => response.probabilities.slice(i * k, (i + 1) * k));
  checkPreferenceMatrix(matrix, `${where}: P`);
  return matrix;
}

/**
 * Asks the oracle for the K×K preference matrix of each candidate set, and checks what it answers.
 *
 * Example: `sets$.pipe(compareCandidates({ oracle, concurrency: 8 }))`
 * @return the sets with their matrices, in completion order
 */
export function compareCandidates(config: CompareCandidatesConfig): OperatorFunction<CandidateSet, ComparedSet> {
  return mergeMap((set: CandidateSet) => {
    const request = create(CompareRequestSchema, {
      requestId: `${set.policyVersion}/${set.prompt.id}`,
      prompt: set.prompt.prompt,
      candidates: set.candidates.map((c) => c.text),
    });
    return from(config.oracle.request(request)).pipe(
      map((response) => ({ ...set, matrix: toMatrix(response, set.candidates.length, `oracle answer for prompt ${set.prompt.id}`) })),
      catchError((err: unknown) => skipBadInput(err, (rpc) => config.onSkip?.(set, rpc))),
    );
  }, config.concurrency);
}
