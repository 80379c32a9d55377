import { create } from "@bufbuild/protobuf";
import { catchError, from, map, mergeMap, type OperatorFunction } from "rxjs";
import { type GenerateRequest, GenerateRequestSchema, type GenerateResponse } from "../gen/sppo/v1/generator_pb.js";
import { type SamplingSettings, samplingParams } from "../lib/config/sampling.js";
import type { RpcError } from "../lib/errors.js";
import type { Multiplexer } from "../lib/grpc/multiplexer.js";
import { skipBadInput } from "./skip-bad-input.js";
import type { Prompt } from "./prompts.js";
import type { CandidateSet } from "./types.js";

export interface GenerateCandidatesConfig {
  /** The generator's Generate stream. */
  generator: Multiplexer<GenerateRequest, GenerateResponse>;
  /** K, samples per prompt. */
  samples: number;
  /** Every sample of the stage must come from this version (the generator refuses otherwise). */
  policyVersion: number;
  /**
   * ... with this checksum, when given: a generator replica that holds another copy of the version (an earlier run's)
   * pulls the right one instead of sampling from it.
   */
  policySha256?: string;
  /** Sampling of every request (pipeline.sampling); each request gets its own seed. */
  sampling: SamplingSettings;
  /** Seed of the stage; each prompt's seed is derived from it and the prompt's position. */
  seed: number;
  /**
   * A prompt's position in its split, for its seed. @default its index in the stream. A resumed iteration sends
   * only the prompts not yet scored, and each must still get the seed it had in the full split.
   */
  positionOf?: (prompt: Prompt) => number;
  /** Prompts in flight. */
  concurrency: number;
  /** Called for a prompt the generator refused (bad input); the stage drops it and goes on. Other errors end the stream. */
  onSkip?: (prompt: Prompt, error: RpcError) => void;
}

/**
 * Samples K responses per prompt from one pinned policy version.
 *
 * Example: `prompts$.pipe(generateCandidates({ generator, samples: 5, policyVersion: 0, ... }))`
 * @param config what to sample and how many prompts may be in flight
 * @return a stream of candidate sets, in completion order
 */
export function generateCandidates(config: GenerateCandidatesConfig): OperatorFunction<Prompt, CandidateSet> {
  return mergeMap((prompt: Prompt, index: number) => {
    const request = create(GenerateRequestSchema, {
      requestId: `${config.policyVersion}/${prompt.id}`,
      prompt: prompt.prompt,
      numSamples: config.samples,
      policyVersion: config.policyVersion,
      policySha256: config.policySha256 ?? "",
      params: samplingParams(config.sampling, BigInt(config.seed) * 1_000_003n + BigInt(config.positionOf?.(prompt) ?? index)),
    });
    return from(config.generator.request(request)).pipe(
      map((response) => ({
        prompt,
        promptTokenIds: response.promptTokenIds,
        candidates: response.candidates,
        policyVersion: response.policyVersion,
        policySha256: config.policySha256 ?? "",
      })),
      catchError((err: unknown) => skipBadInput(err, (rpc) => config.onSkip?.(prompt, rpc))),
    );
  }, config.concurrency);
}
