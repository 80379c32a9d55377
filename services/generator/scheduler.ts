/**
 * The generator's batch scheduler, over lib/streams/batcher.ts: every accepted request becomes one job in one queue
 * bounded by `maxQueuedRequests` (beyond it: RESOURCE_EXHAUSTED, never unbounded memory). Up to `maxConcurrentRuns`
 * engine runs go at once; a run takes the oldest job and every queued job that can share its batch, up to `maxBatch`
 * rows (a request's K samples, or its scored responses, never split):
 *  - Generate with a seed shares a batch with other seeded requests of the same version and sampling options
 *    (temperature, top-p, top-k, max_new_tokens after the context clamp, stop_on_eos; prompt lengths may differ:
 *    rows are left-padded and masked). Each row keeps its own generator: row i of a request with seed s draws from
 *    createRng(s, i) (the engines' per-row `rows` option), exactly the stream it would use running alone, so its
 *    tokens depend only on (seed, i, prompt, params, version) — reproducible whatever else the server is doing
 *    (test/services/generator/batching.test.ts checks alone = batched on both engines).
 *  - Generate without a seed shares a batch with other unseeded requests of the same version and sampling options;
 *    the batch gets a fresh random seed. Seeded and unseeded requests do not share runs.
 *  - Score jobs of the same version share batches (padding is masked, so a score does not depend on its batch-mates
 *    beyond float rounding).
 * Runs start on the next event-loop turn at the earliest, so requests that arrive together batch together; the oldest
 * unseeded job waits up to `maxWaitMs` for batch-mates while its batch is not full (a gRPC stream's requests arrive
 * over several turns), unless it arrived while every run was busy. Seeded Generate jobs never wait: they take the
 * compatible seeded jobs already queued (those that arrived while the previous run went on).
 */
import { randomInt } from "node:crypto";
import type { GeneratorConfig } from "../../lib/config/generator.js";
import { Code, RpcError } from "../../lib/errors.js";
import { log } from "../../lib/log.js";
import { Batcher } from "../../lib/streams/batcher.js";
import type { EngineSample, EngineSampleOptions, EngineScore, PolicyEngine, ScorePair } from "./engine.js";

/** What a job needs of its policy version. */
export interface RunVersion {
  engine: PolicyEngine;
  padId: number;
}

/** A Generate request's engine work: K rows of one prompt. */
export interface SampleJob {
  kind: "sample";
  handle: RunVersion;
  prompt: number[];
  k: number;
  options: Omit<EngineSampleOptions, "seed" | "rows">;
  /** The request's seed; undefined: the run's random seed (and the job may share its run). */
  seed: number | undefined;
}

/** A Score request's engine work: its (prompt, response) pairs. */
export interface ScoreJob {
  kind: "score";
  handle: RunVersion;
  pairs: ScorePair[];
}

type Job = SampleJob | ScoreJob;
type Output = EngineSample[] | EngineScore[];

const rowsOf = (job: Job) => (job.kind === "sample" ? job.k : job.pairs.length);

/** Whether `b` may run in the same engine run as `a`. */
function compatible(a: Job, b: Job): boolean {
  if (a.handle !== b.handle) return false;
  if (a.kind === "score" && b.kind === "score") return true;
  if (a.kind !== "sample" || b.kind !== "sample" || (a.seed === undefined) !== (b.seed === undefined)) return false;
  // Equal maxNewTokens (already clamped to each job's room in the context) keep every row's length what it is alone.
  const x = a.options;
  const y = b.options;
  return x.temperature === y.temperature && x.topP === y.topP && x.topK === y.topK && x.maxNewTokens === y.maxNewTokens && x.eosId === y.eosId;
}

/** One engine run over compatible jobs (all sample or all score, one version): each job's outputs, in order. */
async function runJobs(jobs: Job[]): Promise<Output[]> {
  const first = jobs[0];
  try {
    if (first.kind === "sample") {
      const samplers = jobs as SampleJob[];
      const rows = samplers.flatMap((j) => Array.from({ length: j.k }, () => j.prompt));
      // Different prompt lengths share a run: the longest bounds every row's room in the context.
      const longest = Math.max(...samplers.map((j) => j.prompt.length));
      const maxNewTokens = Math.min(first.options.maxNewTokens, first.handle.engine.contextLength - longest);
      let sampling: EngineSampleOptions;
      if (first.seed === undefined) sampling = { ...first.options, maxNewTokens, seed: randomInt(0, 2 ** 48 - 1) };
      else {
        // Seeded jobs (all of them here): row i of a job draws from createRng(job seed, i), as when it runs alone.
        const seeds = samplers.flatMap((j) => Array.from({ length: j.k }, (_, i) => ({ seed: j.seed as number, stream: i })));
        sampling = { ...first.options, maxNewTokens, seed: first.seed, rows: seeds };
      }
      const samples = await first.handle.engine.sample(rows, sampling);
      return splitRows(samples, samplers.map((j) => j.k));
    }
    const scorers = jobs as ScoreJob[];
    const scores = await first.handle.engine.score(
      scorers.flatMap((j) => j.pairs),
      { padId: first.handle.padId },
    );
    return splitRows(scores, scorers.map((j) => j.pairs.length));
  } catch (err) {
    if (err instanceof RpcError) throw err;
    log.error({ err }, "generator: engine run failed");
    throw new RpcError(Code.INTERNAL, `engine ${first.handle.engine.name}: ${(err as Error).message}`, { cause: err });
  }
}

/** `rows` cut into consecutive parts of the given sizes. */
function splitRows<T>(rows: T[], sizes: number[]): T[][] {
  let at = 0;
  return sizes.map((n) => rows.slice(at, (at += n)));
}

export type SchedulerConfig = Pick<GeneratorConfig, "maxQueuedRequests" | "maxConcurrentRuns" | "maxBatch" | "maxWaitMs">;

/** The bounded queue of engine jobs and the runs it feeds (see the file header). */
export class BatchScheduler {
  private readonly batcher: Batcher<Job, Output>;

  constructor(config: SchedulerConfig) {
    this.batcher = new Batcher(runJobs, {
      maxBatch: config.maxBatch,
      maxWaitMs: config.maxWaitMs,
      maxConcurrentRuns: config.maxConcurrentRuns,
      maxQueued: config.maxQueuedRequests,
      name: "generator",
      maxQueuedSetting: "generator.maxQueuedRequests",
      rowsOf,
      compatible,
      waitsForMates: (job) => !(job.kind === "sample" && job.seed !== undefined),
    });
  }

  /** Requests waiting for the engine (not counting the ones running). */
  get queued(): number {
    return this.batcher.queued;
  }

  /** Samples `job.k` rows of `job.prompt`; CANCELLED when `signal` aborts while the job still waits. */
  async sample(job: Omit<SampleJob, "kind">, signal: AbortSignal | undefined): Promise<EngineSample[]> {
    return (await this.batcher.submit({ kind: "sample", ...job }, signal)) as EngineSample[];
  }

  /** Scores `pairs` on `handle`; CANCELLED when `signal` aborts while the job still waits. */
  async score(handle: RunVersion, pairs: ScorePair[], signal: AbortSignal | undefined): Promise<EngineScore[]> {
    return (await this.batcher.submit({ kind: "score", handle, pairs }, signal)) as EngineScore[];
  }

  /** Fails queued jobs with UNAVAILABLE, refuses new ones, and waits for the runs going on. */
  close(): Promise<void> {
    return this.batcher.close();
  }
}
