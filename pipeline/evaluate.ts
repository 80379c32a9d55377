/**
 * Evaluation after an iteration, our analogue of the paper's Table 1: on held-out prompts, responses of the new
 * policy, the base policy and the previous policy (same seeds for all three, so that they differ only by policy)
 * are judged together by the oracle; the win rate of the new policy against another is the mean of P(new ≻ other).
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

export interface EvaluateConfig {
  generator: Multiplexer<GenerateRequest, GenerateResponse>;
  oracle: Multiplexer<CompareRequest, CompareResponse>;
  prompts: Prompt[];
  /** Versions compared: the new one first. */
  newVersion: number;
  baseVersion: number;
  previousVersion: number;
  /** The checksum of each version compared, when known: requests pin it (a replica's stale copy is not used). */
  versionSha256?: ReadonlyMap<number, string>;
  samples: number;
  /** Sampling of every request (pipeline.sampling); each prompt gets its own seed, the same for every version. */
  sampling: SamplingSettings;
  seed: number;
  concurrency: number;
  /** Probe responses judged against the new policy's samples (pipeline.probes). */
  probes?: string[];
  /** Called after each prompt is judged, with the prompts done and the response tokens sampled so far. */
  onProgress?: (done: number, tokens: number) => void;
}

export interface Evaluation {
  winRateVsBase: number;
  winRateVsPrevious: number;
  /** Judgements averaged (prompts × samples, less the skipped). */
  comparisons: number;
  /** Comparisons the oracle refused (e.g. an empty response), left out of the averages. */
  skipped: number;
  /** max_r mean_y P(r ≻ y) − ½ over the probes, when probes are given. */
  probeExploitability?: number;
  /** mean_y P(r ≻ y) for each probe r, in the order given: linear in the policy, so a mixture's is the mean. */
  probeWinRates?: number[];
}

export async function evaluate(config: EvaluateConfig): Promise<Evaluation> {
  const versions = [...new Set([config.newVersion, config.baseVersion, config.previousVersion])];
  const column = (version: number) => versions.indexOf(version);
  let done = 0;
  let tokens = 0;
  let skipped = 0;
  const probes = config.probes ?? [];
  const probeWins = probes.map(() => 0);
  let probeJudged = 0;
  const perPrompt$ = from(config.prompts).pipe(
    mergeMap(async (prompt, index) => {
      const seed = BigInt(config.seed) * 1_000_003n + BigInt(index);
      const responses = await Promise.all(
        versions.map((version) =>
          config.generator.request(
            create(GenerateRequestSchema, {
              requestId: `eval/${config.newVersion}/${version}/${prompt.id}`,
              prompt: prompt.prompt,
              numSamples: config.samples,
              policyVersion: version,
              policySha256: config.versionSha256?.get(version) ?? "",
              params: samplingParams(config.sampling, seed),
            }),
          ),
        ),
      );
      for (const r of responses) for (const c of r.candidates) tokens += c.tokenIds.length;
      let vsBase = 0;
      let vsPrevious = 0;
      let n = 0;
      for (let s = 0; s < config.samples; s++) {
        const candidates = responses.map((r) => r.candidates[s].text);
        let matrix: number[][];
        try {
          const response = await config.oracle.request(
            create(CompareRequestSchema, { requestId: `eval/${config.newVersion}/${prompt.id}/${s}`, prompt: prompt.prompt, candidates: versions.length > 1 ? candidates : [candidates[0], candidates[0]] }),
          );
          matrix = toMatrix(response, Math.max(versions.length, 2), `oracle answer for evaluation prompt ${prompt.id}`);
        } catch (err) {
          // The oracle refused this comparison (e.g. an empty response): it is counted, not guessed.
          if (err instanceof RpcError && isItemRefusal(err.code)) {
            skipped++;
            continue;
          }
          throw err;
        }
        vsBase += versions.length > 1 ? matrix[0][column(config.baseVersion)] : 0.5;
        vsPrevious += versions.length > 1 ? matrix[0][column(config.previousVersion)] : 0.5;
        n++;
        if (probes.length > 0) {
          // The new policy's sample against every probe at once: row 0 is the sample, rows 1.. the probes.
          const response = await config.oracle.request(
            create(CompareRequestSchema, { requestId: `probe/${config.newVersion}/${prompt.id}/${s}`, prompt: prompt.prompt, candidates: [candidates[0], ...probes] }),
          );
          const m = toMatrix(response, probes.length + 1, `oracle answer for the probes of evaluation prompt ${prompt.id}`);
          for (let r = 0; r < probes.length; r++) probeWins[r] += m[r + 1][0];
          probeJudged++;
        }
      }
      config.onProgress?.(++done, tokens);
      return { vsBase, vsPrevious, n };
    }, config.concurrency),
    reduce((acc, r) => ({ vsBase: acc.vsBase + r.vsBase, vsPrevious: acc.vsPrevious + r.vsPrevious, n: acc.n + r.n }), { vsBase: 0, vsPrevious: 0, n: 0 }),
  );
  const total = await firstValueFrom(perPrompt$);
  if (total.n === 0) throw new RpcError(Code.FAILED_PRECONDITION, `evaluation: the oracle refused all ${skipped} comparisons (see the log for why)`);
  return {
    winRateVsBase: total.vsBase / total.n,
    winRateVsPrevious: total.vsPrevious / total.n,
    comparisons: total.n,
    skipped,
    probeExploitability: probeJudged > 0 ? Math.max(...probeWins.map((w) => w / probeJudged)) - 0.5 : undefined,
    probeWinRates: probeJudged > 0 ? probeWins.map((w) => w / probeJudged) : undefined,
  };
}
