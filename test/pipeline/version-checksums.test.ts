/**
 * The loop's stages pin every generator request by version and checksum (policy_sha256), so that a generator
 * replica holding an earlier run's copy of a version number pulls this run's instead (the generator's side:
 * test/services/generator/pinned-checksum.test.ts). Stages over recording fakes of the multiplexers.
 * Run: node --import tsx --test test/pipeline/version-checksums.test.ts
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { firstValueFrom, from, toArray } from "rxjs";
import { CandidateSchema, type GenerateRequest, type GenerateResponse, GenerateResponseSchema, type ScoreRequest, type ScoreResponse, ScoreResponseSchema } from "../../gen/sppo/v1/generator_pb.js";
import { type CompareRequest, type CompareResponse, CompareResponseSchema } from "../../gen/sppo/v1/oracle_pb.js";
import { loopSamplingSchema } from "../../lib/config/sampling.js";
import { evaluate } from "../../pipeline/evaluate.js";
import { generateCandidates } from "../../pipeline/generate-candidates.js";
import type { Multiplexer } from "../../lib/grpc/multiplexer.js";
import { rescoreReferences } from "../../pipeline/rescore-references.js";

/** A multiplexer that records each request and answers with `answer`. */
function recording<Req extends { requestId: string }, Res extends { requestId: string }>(answer: (r: Req) => Res): Multiplexer<Req, Res> & { seen: Req[] } {
  const seen: Req[] = [];
  return {
    seen,
    request: async (r: Req) => {
      seen.push(r);
      return answer(r);
    },
    close() {},
    abort() {},
  };
}

const sha = (c: string) => c.repeat(64);
const sampling = loopSamplingSchema.parse({});
const candidates = [0, 1].map((index) => create(CandidateSchema, { index, tokenIds: [5 + index], text: `c${index}` }));

describe("requests pinned by checksum", () => {
  it("generateCandidates and rescoreReferences send the version's checksum; evaluate sends each version's", async () => {
    const generator = recording<GenerateRequest, GenerateResponse>((r) =>
      create(GenerateResponseSchema, { requestId: r.requestId, policyVersion: r.policyVersion, promptTokenIds: [1], candidates }),
    );
    const prompts = [{ id: "p1", prompt: "tell me" }];
    const sets = await firstValueFrom(
      from(prompts).pipe(generateCandidates({ generator, samples: 2, policyVersion: 1, policySha256: sha("a"), sampling, seed: 3, concurrency: 1 }), toArray()),
    );
    assert.deepEqual(generator.seen.map((r) => [r.policyVersion, r.policySha256]), [[1, sha("a")]]);
    assert.equal(sets[0].policySha256, sha("a"));

    const scorer = recording<ScoreRequest, ScoreResponse>((r) => create(ScoreResponseSchema, { requestId: r.requestId, logprobs: [-1, -2], tokenCounts: [1, 1] }));
    await firstValueFrom(from([{ ...sets[0], matrix: [], winRates: [0.5, 0.5], referenceLogprobs: [0, 0] }]).pipe(rescoreReferences({ scorer, concurrency: 1 })));
    assert.deepEqual(scorer.seen.map((r) => [r.policyVersion, r.policySha256]), [[1, sha("a")]]);

    const oracle = recording<CompareRequest, CompareResponse>((r) =>
      create(CompareResponseSchema, { requestId: r.requestId, k: r.candidates.length, probabilities: r.candidates.flatMap(() => r.candidates.map(() => 0.5)) }),
    );
    const evaluator = recording<GenerateRequest, GenerateResponse>((r) =>
      create(GenerateResponseSchema, { requestId: r.requestId, policyVersion: r.policyVersion, promptTokenIds: [1], candidates: candidates.slice(0, 1) }),
    );
    await evaluate({
      generator: evaluator,
      oracle,
      prompts,
      newVersion: 2,
      baseVersion: 0,
      previousVersion: 1,
      versionSha256: new Map([
        [0, sha("0")],
        [1, sha("a")],
        [2, sha("b")],
      ]),
      samples: 1,
      sampling,
      seed: 1,
      concurrency: 1,
    });
    assert.deepEqual(
      evaluator.seen.map((r) => [r.policyVersion, r.policySha256]).sort(),
      [
        [0, sha("0")],
        [1, sha("a")],
        [2, sha("b")],
      ],
    );
  });
});
