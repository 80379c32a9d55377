import { z } from "zod";
import { type MovedField, withMovedFields } from "./moved-fields.js";
import { loopSamplingSchema } from "./sampling.js";

/** Fields of this section that moved (still read at the old place, with a warning naming the new one). */
export const PIPELINE_MOVED_FIELDS: readonly MovedField[] = [
  { from: "temperature", to: "sampling.temperature" },
  { from: "topP", to: "sampling.topP" },
  { from: "topK", to: "sampling.topK" },
  { from: "maxNewTokens", to: "sampling.maxNewTokens" },
];

/** The self-play loop (pipeline/): data, iterations, sampling, stages' concurrency, evaluation, outputs. */
const pipelineObject = z
  .object({
    /** Prompt set: a JSONL file ({"prompt": ...} per line), a Parquet file, or a Hugging Face dataset directory
     * holding Parquet files with a `prompt` column (UltraFeedback layout). @default "assets/prompts/default.jsonl" */
    prompts: z.string().min(1).default("assets/prompts/default.jsonl"),
    /** SPPO iterations; iteration t trains on the t-th of `iterations` disjoint prompt splits (the paper: 3). @default 3 */
    iterations: z.number().int().min(1).default(3),
    /** Prompts per iteration; 0 = split the training prompts evenly across iterations. @default 0 */
    promptsPerIteration: z.number().int().min(0).default(0),
    /** Held-out prompts for evaluation, taken from the end of the prompt set before splitting. @default 64 */
    evalPrompts: z.number().int().min(1).default(64),
    /** Samples per evaluation prompt from each compared policy. @default 2 */
    evalSamples: z.number().int().min(1).default(2),
    /** K, responses sampled per prompt (paper/official: 5). @default 5 */
    samplesPerPrompt: z.number().int().min(2).default(5),
    /** The SamplingParams of every Generate request (lib/config/sampling.ts): temperature 0.7, topP 0.9, topK 0,
     * maxNewTokens 32 by default (the official scripts' 0.7/0.9; the paper text's 1.0/1.0). Formerly
     * pipeline.temperature, topP, topK and maxNewTokens, which are still read. */
    sampling: loopSamplingSchema.prefault({}),
    /** Win-rate estimate: "matrix" (paper, P̂_i = mean_j P_ij) or "score_collapse" (official code). @default "matrix" */
    winRate: z.enum(["matrix", "score_collapse"]).default("matrix"),
    /** Reference log-probs log π_t(y|x): "sampling" takes the generator's summed log-prob at temperature 1 (same
     * policy, same quantity, no second pass); "rescore" scores every response again with Generator.Score. @default "sampling" */
    referenceLogprobs: z.enum(["sampling", "rescore"]).default("sampling"),
    /** Prompts in flight at the generator. @default 8 */
    generateConcurrency: z.number().int().min(1).default(8),
    /** Candidate sets in flight at the oracle. @default 8 */
    compareConcurrency: z.number().int().min(1).default(8),
    /** Streams the loop keeps open to each of the generator and the oracle; requests go to them in turn, and
     * round_robin spreads the streams over the replicas, so use at least the number of replicas. @default 4 */
    streamsPerService: z.number().int().min(1).max(256).default(4),
    /** How long the loop waits for a service to come back after its stream broke (a replica or the optimizer
     * restarting) before the run fails, in ms. @default 300000 */
    reconnectTimeoutMs: z.number().int().min(0).default(300_000),
    /** How long the loop waits at start for each service to answer (remote ones may still be starting), in ms.
     * @default 60000 */
    startupTimeoutMs: z.number().int().min(1).default(60_000),
    /** A Generate, Score or Compare request unanswered this long is sent again on another stream (so that it can reach
     * another replica; a replica that hangs with its connection open no longer stalls the run), counted against the
     * re-send limit of 3; then it fails with DEADLINE_EXCEEDED. Raise it for models whose requests wait long in the
     * service's queue. 0 = no deadline. In ms. @default 300000 */
    requestTimeoutMs: z.number().int().min(0).default(300_000),
    /** Seed of prompt shuffling and of every sampling request. @default 1 */
    seed: z.number().int().min(0).default(1),
    /** Port of the loop's telemetry service (sppo.v1.Telemetry/Watch); 0 = any free port, -1 = off. @default 50054 */
    telemetryPort: z.number().int().min(-1).max(65535).default(50054),
    /** Port of the live dashboard `sppo run` serves (http://HOST:PORT/, printed as the run starts); 0 = any free
     * port, -1 = off. @default 0 */
    dashboardPort: z.number().int().min(-1).max(65535).default(0),
    /** Interface the loop's own listeners bind: telemetry, dashboard, /metrics and the services it starts itself.
     * Unset: loopback (127.0.0.1) when the run starts any service itself, else server.host (a loop in a cluster is
     * watched from other pods). */
    host: z.string().min(1).optional(),
    /** Every n-th judged set of an iteration goes to telemetry (prompt, candidates, K×K matrix, P̂: what the
     * dashboard shows); 0 = none. The journal keeps every set regardless. @default 1 */
    judgedSetEvery: z.number().int().min(0).default(1),
    /** Telemetry events the loop keeps in memory, the newest ones, for `sppo watch --history` (Watch's
     * include_history); metrics.jsonl has them all. Bounds the loop's memory on long runs. @default 10000 */
    telemetryHistoryEvents: z.number().int().min(0).default(10_000),
    /** "overlapped": stages run concurrently (the oracle judges while later prompts are sampled; training starts
     * with the first full batch). "sequential": each stage finishes before the next starts (generate all, rank all,
     * train), as the official scripts do — for comparison. @default "overlapped" */
    schedule: z.enum(["overlapped", "sequential"]).default("overlapped"),
    /** Fixed probe responses: after each iteration the evaluation also reports the probe exploitability
     * max_r mean_y P(r ≻ y) − ½ of the new policy's samples y, how much the best probe beats it (the closer to 0, the
     * nearer a Nash equilibrium on these responses). @default [] (not measured) */
    probes: z.array(z.string().min(1)).default([]),
    /** Other losses run from the same base policy on the same prompts and seeds, for comparison (embedded services
     * only): each writes into <out>/<algorithm>/, and summary.json and report.html show them side by side. @default [] */
    compareAlgorithms: z.array(z.enum(["sppo", "sppo_hard", "dpo", "ipo"])).default([]),
    /** Seeds of `sppo compare-runs` (its --seeds): seed s runs with pipeline.seed + s and optimizer.seed + s,
     * s = 0..N−1. @default 5 */
    compareSeeds: z.number().int().min(1).max(1000).default(5),
    /** Show progress bars on a terminal. @default true */
    progress: z.boolean().default(true),
  })
  .strict();

/** The self-play loop's section, reading its moved fields at their old places too. */
export const pipelineConfigSchema = withMovedFields("pipeline", PIPELINE_MOVED_FIELDS, pipelineObject);

export type PipelineConfig = z.output<typeof pipelineConfigSchema>;
