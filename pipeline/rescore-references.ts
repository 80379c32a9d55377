import { create } from "@bufbuild/protobuf";
import { from, map, mergeMap, type OperatorFunction } from "rxjs";
import { type ScoreRequest, ScoreRequestSchema, type ScoreResponse } from "../gen/sppo/v1/generator_pb.js";
import { Code, RpcError } from "../lib/errors.js";
import type { Multiplexer } from "../lib/grpc/multiplexer.js";
import type { ScoredSet } from "./types.js";

/**
 * Recomputes each response's reference log-prob log π_t(y|x) with a separate forward pass of the frozen policy
 * (Generator.Score, pinned to the version that sampled it), as the official scripts do, instead of taking the
 * sampler's own summed log-prob.
 *
 * Example: `scored$.pipe(rescoreReferences({ scorer, concurrency: 8 }))`
 */
export function rescoreReferences(config: { scorer: Multiplexer<ScoreRequest, ScoreResponse>; concurrency: number }): OperatorFunction<ScoredSet, ScoredSet> {
  return mergeMap((set: ScoredSet) => {
    const request = create(ScoreRequestSchema, {
      requestId: `score/${set.policyVersion}/${set.prompt.id}`,
      promptTokenIds: set.promptTokenIds,
      responses: set.candidates.map((c) => ({ tokenIds: c.tokenIds })),
      policyVersion: set.policyVersion,
      policySha256: set.policySha256 ?? "",
    });
    return from(config.scorer.request(request)).pipe(
      map((response) => {
        if (response.logprobs.length !== set.candidates.length) {
          throw new RpcError(Code.INTERNAL, `generator Score for prompt ${set.prompt.id}: ${response.logprobs.length} log-probs for ${set.candidates.length} responses`);
        }
        return { ...set, referenceLogprobs: response.logprobs };
      }),
    );
  }, config.concurrency);
}
