/**
 * The final policies of several runs judged together — the analogue of the paper's pairwise comparisons between
 * SPPO, DPO and IPO. On each held-out prompt every policy samples with the same seed (so that the responses differ
 * only by policy), the oracle judges the A responses of sample s as one A×A matrix, and the result is the mean of
 * those matrices: entry (i, j) is the win rate of policy i against policy j. A mean of preference matrices is one
 * (P_ij + P_ji = 1, P_ii = ½).
 */
import { create } from "@bufbuild/protobuf";
import { firstValueFrom, from, mergeMap, reduce } from "rxjs";
import { type GenerateRequest, GenerateRequestSchema, type GenerateResponse } from "../gen/sppo/v1/generator_pb.js";
import { type CompareRequest, CompareRequestSchema, type CompareResponse } from "../gen/sppo/v1/oracle_pb.js";
import { type SamplingSettings, samplingParams } from "../lib/config/sampling.js";
import { Code, RpcError } from "../lib/errors.js";
import { isItemRefusal } from "../lib/grpc/codes.js";
import { toMatrix } from "./compare-candidates.js";
import type { Multiplexer } from "../lib/grpc/multiplexer.js";
import type { Prompt } from "./prompts.js";

export interface HeadToHeadPolicy {
  /** Name in errors and request ids ("dpo"). */
  name: string;
  /** The generator serving the policy. */
  generator: Multiplexer<GenerateRequest, GenerateResponse>;
  /** The version it is held as there. */
  policyVersion: number;
}

export interface HeadToHeadConfig {
  /** The policies, in the matrix's order. */
  policies: HeadToHeadPolicy[];
  oracle: Multiplexer<CompareRequest, CompareResponse>;
  prompts: Prompt[];
  /** Samples per prompt from each policy; sample s of every policy is judged together. */
  samples: number;
  /** Sampling of every request (pipeline.sampling); each prompt gets its own seed, the same for every policy. */
  sampling: SamplingSettings;
  seed: number;
  /** Prompts in flight. */
  concurrency: number;
}

export interface HeadToHead {
  /** matrix[i][j] = mean P(response of policy i ≻ response of policy j). */
  matrix: number[][];
  /** Judgements averaged. */
  comparisons: number;
  /** Judgements the oracle refused (e.g. an empty response), left out of the mean. */
  skipped: number;
}

/** Judges the policies against each other on the prompts; throws when the oracle refused every judgement. */
export async function headToHead(config: HeadToHeadConfig): Promise<HeadToHead> {
  const a = config.policies.length;
  if (a === 0) throw new RangeError("headToHead: no policies");
  const zero = () => Array.from({ length: a }, () => new Array<number>(a).fill(0));
  if (a === 1) return { matrix: [[0.5]], comparisons: 0, skipped: 0 };
  const perPrompt$ = from(config.prompts).pipe(
    mergeMap(async (prompt, index) => {
      const seed = BigInt(config.seed) * 1_000_003n + BigInt(index);
      const responses = await Promise.all(
        config.policies.map((policy) =>
          policy.generator.request(
            create(GenerateRequestSchema, {
              requestId: `head-to-head/${policy.name}/${prompt.id}`,
              prompt: prompt.prompt,
              numSamples: config.samples,
              policyVersion: policy.policyVersion,
              params: samplingParams(config.sampling, seed),
            }),
          ),
        ),
      );
      const sum = zero();
      let n = 0;
      let skipped = 0;
      for (let s = 0; s < config.samples; s++) {
        let matrix: number[][];
        try {
          const response = await config.oracle.request(
            create(CompareRequestSchema, { requestId: `head-to-head/${prompt.id}/${s}`, prompt: prompt.prompt, candidates: responses.map((r) => r.candidates[s].text) }),
          );
          matrix = toMatrix(response, a, `oracle answer for head-to-head prompt ${prompt.id}`);
        } catch (err) {
          // The oracle refused this judgement (e.g. an empty response): counted, not guessed.
          if (err instanceof RpcError && isItemRefusal(err.code)) {
            skipped++;
            continue;
          }
          throw err;
        }
        for (let i = 0; i < a; i++) for (let j = 0; j < a; j++) sum[i][j] += matrix[i][j];
        n++;
      }
      return { sum, n, skipped };
    }, config.concurrency),
    reduce(
      (acc, r) => {
        for (let i = 0; i < a; i++) for (let j = 0; j < a; j++) acc.sum[i][j] += r.sum[i][j];
        return { sum: acc.sum, n: acc.n + r.n, skipped: acc.skipped + r.skipped };
      },
      { sum: zero(), n: 0, skipped: 0 },
    ),
  );
  const total = await firstValueFrom(perPrompt$, { defaultValue: { sum: zero(), n: 0, skipped: 0 } });
  if (total.n === 0) {
    throw new RpcError(Code.FAILED_PRECONDITION, `head-to-head of ${config.policies.map((p) => p.name).join(", ")}: no judgement (${total.skipped} refused by the oracle, ${config.prompts.length} prompts)`);
  }
  return { matrix: total.sum.map((row) => row.map((v) => v / total.n)), comparisons: total.n, skipped: total.skipped };
}
