/**
 * `sppo compare-runs`: the paper's comparison, reproduced in the loop over seeds. From the same base policy, prompt
 * set and oracle, every (seed, algorithm) pair is one real `sppo run` (embedded services, T iterations) into
 * <out>/seed-<s>/<algorithm>/; after each seed's runs, their final policies are judged against each other
 * (pipeline/head-to-head.ts). Writes <out>/comparison.json and <out>/comparison.html.
 *
 * What a seed varies: seed index i (0..N−1) runs with pipeline.seed + i — the shuffle that decides the held-out
 * evaluation prompts and each iteration's prompt split, and every sampling request's seed (training samples,
 * evaluation, head-to-head) — and optimizer.seed + i (the trainer's shuffling between epochs). Within a seed the
 * algorithms share all of it: the first iteration trains on the same sampled responses, and the runs differ only by
 * their loss from there on.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { toBinary } from "@bufbuild/protobuf";
import { Generator, type GenerateRequest, GenerateRequestSchema, type GenerateResponse } from "../gen/sppo/v1/generator_pb.js";
import { type CompareRequest, CompareRequestSchema, type CompareResponse, PreferenceOracle } from "../gen/sppo/v1/oracle_pb.js";
import { writeFileAtomic } from "../lib/atomic.js";
import type { OptimizerAlgorithm } from "../lib/config/optimizer.js";
import type { Config } from "../lib/config/schema.js";
import { type Client, createClient } from "../lib/grpc/client.js";
import { type RunningServer, serve } from "../lib/grpc/serve.js";
import { Code, RpcError } from "../lib/errors.js";
import { log } from "../lib/log.js";
import { directoryManifest } from "../lib/weights/index.js";
import { type ServiceInstance, serviceFactories } from "../services/index.js";
import { runDirs } from "../services/optimizer/runs.js";
import { renderComparison } from "./comparison-report.js";
import { evaluate } from "./evaluate.js";
import { headToHead } from "./head-to-head.js";
import type { IterationResult } from "./loop.js";
import { createMultiplexer, type Multiplexer } from "../lib/grpc/multiplexer.js";
import { loadPrompts, splitPrompts } from "./prompts.js";
import { runSelfPlay } from "./run.js";
import { checkSameSettings, finishedIterations, readRunState, type RunInvocation, unfinishedRun } from "./run-state.js";
import { type SeedSummary, seedSummary } from "./seed-summary.js";

export interface CompareRunsOptions {
  /** The comparison's config: base policy, prompts, oracle, hyper-parameters shared by every run. */
  config: Config;
  /** Output directory. */
  outDir: string;
  /** How many seeds (N). */
  seeds: number;
  /** The losses compared, in the order the outputs list them. */
  algorithms: OptimizerAlgorithm[];
  /** Iterations of every run (T). */
  iterations: number;
  /**
   * Keep the runs in `outDir` that have the same settings (finished ones are reused, unfinished ones continued)
   * instead of starting every run afresh. @default false
   */
  continue?: boolean;
  /** How the comparison was invoked (the config file), recorded in each run's run.json. */
  invocation?: RunInvocation;
}

export interface ComparisonIteration {
  iteration: number;
  win_rate_vs_base: SeedSummary;
  win_rate_vs_previous: SeedSummary;
  /** With pipeline.probes: the iteration's policy's. */
  probe_exploitability?: SeedSummary;
  /**
   * With pipeline.probes: the probe exploitability of the average policy π̄_t — the mixture of the base and the
   * policies of iterations 1..t, each with weight 1/(t+1) — the policy Theorem 4.1 bounds. P(r ≻ π̄_t) is the mean of
   * P(r ≻ π_s) over those policies, measured on the same held-out prompts with the same seeds.
   */
  average_policy_probe_exploitability?: SeedSummary;
  /** Wall time of the iteration (sampling, judging, training, evaluation). */
  seconds: SeedSummary;
}

export interface Comparison {
  /** pipeline.seed of each seed's runs; optimizer.seed is optimizer_seeds at the same index. */
  seeds: number[];
  optimizer_seeds: number[];
  algorithms: Record<string, { iterations: ComparisonIteration[]; runs: string[] }>;
  /** The final policies judged together: matrix[i][j] = win rate of order[i] against order[j], mean over seeds. */
  head_to_head: { order: string[]; matrix: number[][]; per_seed: number[][][]; comparisons: number[]; skipped: number[] };
  /**
   * With pipeline.probes: the base policy's probe exploitability on each seed's held-out prompts (iteration 0), and
   * its mean P(r ≻ base) per probe, per seed.
   */
  base?: { probe_exploitability: SeedSummary; probe_win_rates: number[][] };
  config: string;
  iterations: number;
  seconds: number;
}

/** The config of one (seed index, algorithm) run. */
export function seedConfig(config: Config, algorithm: OptimizerAlgorithm, index: number, iterations: number): Config {
  return {
    ...config,
    optimizer: { ...config.optimizer, algorithm, seed: config.optimizer.seed + index },
    // One run at a time, each with its own embedded services; neither Watch nor a dashboard is served (a new address
    // for every run would be of no use to anyone watching; the log says which run is on).
    pipeline: { ...config.pipeline, seed: config.pipeline.seed + index, iterations, telemetryPort: -1, dashboardPort: -1, compareAlgorithms: [] },
  };
}

/** Runs the comparison; see the file comment. */
export async function compareRuns(options: CompareRunsOptions): Promise<Comparison> {
  const started = Date.now();
  const { config, seeds, algorithms, iterations } = options;
  const outDir = resolve(options.outDir);
  if (algorithms.length === 0) throw new RpcError(Code.INVALID_ARGUMENT, "compare-runs: no algorithms to compare");
  if (new Set(algorithms).size !== algorithms.length) throw new RpcError(Code.INVALID_ARGUMENT, `compare-runs: an algorithm is named twice (${algorithms.join(", ")})`);
  const plan = Array.from({ length: seeds }, (_, index) =>
    algorithms.map((algorithm) => ({ index, algorithm, config: seedConfig(config, algorithm, index, iterations), dir: join(outDir, `seed-${config.pipeline.seed + index}`, algorithm) })),
  );
  // Before anything runs: an unfinished run is never replaced silently, and --continue never mixes settings.
  for (const run of plan.flat()) {
    if (!existsSync(join(run.dir, "run.json"))) continue;
    if (options.continue) {
      checkSameSettings(readRunState(run.dir), run.config, run.dir, `--continue: ${run.dir}`);
    } else if (unfinishedRun(run.dir)) {
      throw new RpcError(Code.FAILED_PRECONDITION, `${run.dir} holds an unfinished run of this comparison: add --continue to continue it, or choose another --out`);
    }
  }

  const results = new Map<OptimizerAlgorithm, IterationResult[][]>(algorithms.map((a) => [a, []]));
  const perSeed: { matrix: number[][]; comparisons: number; skipped: number }[] = [];
  const baseProbes: { exploitability: number; winRates: number[] }[] = [];
  let done = 0;
  for (const runs of plan) {
    for (const run of runs) {
      done++;
      const kept = options.continue === true && existsSync(join(run.dir, "run.json"));
      const reuse = kept && !unfinishedRun(run.dir);
      const what = reuse ? "reusing the finished run" : kept ? "continuing the unfinished run" : "run";
      log.info({ seed: run.config.pipeline.seed, algorithm: run.algorithm, run: done, of: seeds * algorithms.length, dir: run.dir }, `compare-runs: ${what}`);
      const its = reuse
        ? finishedIterations(run.dir)
        : (await runSelfPlay({ config: run.config, outDir: run.dir, resume: kept, invocation: { config: options.invocation?.config ?? "", iterations } })).iterations;
      if (its.length !== iterations) throw new RpcError(Code.INTERNAL, `${run.dir}: the run finished ${its.length} of ${iterations} iterations`);
      results.get(run.algorithm)!.push(its);
    }
    const judged = await judgeSeed(runs[0].config, runs.map((r) => ({ name: r.algorithm, dir: r.dir, last: results.get(r.algorithm)!.at(-1)!.at(-1)! })));
    perSeed.push(judged.headToHead);
    if (judged.baseProbe) baseProbes.push(judged.baseProbe);
    log.info({ seed: runs[0].config.pipeline.seed, order: algorithms, matrix: judged.headToHead.matrix }, "compare-runs: head-to-head of the final policies");
  }

  const comparison: Comparison = {
    seeds: plan.map((runs) => runs[0].config.pipeline.seed),
    optimizer_seeds: plan.map((runs) => runs[0].config.optimizer.seed),
    algorithms: Object.fromEntries(
      algorithms.map((algorithm) => [algorithm, { iterations: summarizeIterations(results.get(algorithm)!, iterations, baseProbes), runs: plan.map((runs) => runs.find((r) => r.algorithm === algorithm)!.dir.slice(outDir.length + 1)) }]),
    ),
    head_to_head: {
      order: [...algorithms],
      matrix: algorithms.map((_, i) => algorithms.map((_, j) => perSeed.reduce((acc, s) => acc + s.matrix[i][j], 0) / perSeed.length)),
      per_seed: perSeed.map((s) => s.matrix),
      comparisons: perSeed.map((s) => s.comparisons),
      skipped: perSeed.map((s) => s.skipped),
    },
    ...(baseProbes.length === seeds ? { base: { probe_exploitability: seedSummary(baseProbes.map((b) => b.exploitability)), probe_win_rates: baseProbes.map((b) => b.winRates) } } : {}),
    config: options.invocation?.config ?? "",
    iterations,
    seconds: (Date.now() - started) / 1000,
  };
  writeFileAtomic(join(outDir, "comparison.json"), `${JSON.stringify(comparison, null, 2)}\n`);
  writeFileAtomic(join(outDir, "comparison.html"), renderComparison(comparison));
  return comparison;
}

/** Per iteration, each measurement over seeds; `base` holds each seed's base probe measurements, when probed. */
function summarizeIterations(perSeed: IterationResult[][], iterations: number, base: { winRates: number[] }[]): ComparisonIteration[] {
  return Array.from({ length: iterations }, (_, t) => {
    const rows = perSeed.map((its) => its[t]);
    const probes = rows.map((r) => r.probe_exploitability);
    // Runs that predate probe_win_rates (reused by --continue) leave the average policy's out.
    const averaged = base.length === perSeed.length && perSeed.every((its) => its.slice(0, t + 1).every((r) => r.probe_win_rates !== undefined));
    return {
      iteration: t + 1,
      win_rate_vs_base: seedSummary(rows.map((r) => r.win_rate_vs_base)),
      win_rate_vs_previous: seedSummary(rows.map((r) => r.win_rate_vs_previous)),
      ...(probes.every((p) => p !== undefined) ? { probe_exploitability: seedSummary(probes as number[]) } : {}),
      ...(averaged ? { average_policy_probe_exploitability: seedSummary(perSeed.map((its, s) => mixtureExploitability([base[s].winRates, ...its.slice(0, t + 1).map((r) => r.probe_win_rates!)]))) } : {}),
      seconds: seedSummary(rows.map((r) => r.seconds)),
    };
  });
}

/** max_r mean_s P(r ≻ π_s) − ½: the probe exploitability of the even mixture of the policies π_s. */
function mixtureExploitability(winRates: readonly (readonly number[])[]): number {
  const probes = winRates[0].length;
  const mean = Array.from({ length: probes }, (_, r) => winRates.reduce((acc, rates) => acc + rates[r], 0) / winRates.length);
  return Math.max(...mean) - 0.5;
}

/**
 * After one seed's runs: a generator per final policy (and one on the base, for its probe exploitability) and one
 * oracle, on loopback; the final policies judged together on the seed's held-out prompts.
 */
async function judgeSeed(
  config: Config,
  runs: { name: string; dir: string; last: IterationResult }[],
): Promise<{ headToHead: { matrix: number[][]; comparisons: number; skipped: number }; baseProbe?: { exploitability: number; winRates: number[] } }> {
  const pipeline = config.pipeline;
  const policyDirs: string[] = [];
  for (const run of runs) {
    // The embedded optimizer publishes into the run's own folder (services/optimizer/runs.ts).
    const policies = runDirs({ checkpointDir: join(run.dir, "checkpoints"), policyDir: join(run.dir, "policies") }, readRunState(run.dir).runId ?? "").policyDir;
    const dir = join(policies, `v${run.last.policyVersion}`);
    const { sha256 } = await directoryManifest(dir);
    if (sha256 !== run.last.policySha256) throw new RpcError(Code.DATA_LOSS, `${dir}: not the policy the run published (sha256 ${sha256}, summary.json says ${run.last.policySha256})`);
    policyDirs.push(dir);
  }
  const probes = pipeline.probes.length > 0;
  const modelDirs = probes ? [...policyDirs, config.optimizer.modelDir] : policyDirs;
  const instances: ServiceInstance[] = [];
  const servers: RunningServer[] = [];
  const closers: (() => void)[] = [];
  const serveLocal = async (instance: ServiceInstance, name: string): Promise<string> => {
    instances.push(instance);
    const server = await serve({ name, services: instance.services, config: { ...config.server, host: "127.0.0.1", port: 0, metricsPort: -1, drainDelayMs: 0, shutdownGraceMs: 2_000 } });
    servers.push(server);
    return `127.0.0.1:${server.port}`;
  };
  const connect = <C extends Client<typeof Generator> | Client<typeof PreferenceOracle>>(client: C): C => {
    closers.push(() => client.close());
    return client;
  };
  const multiplex = <Req extends GenerateRequest | CompareRequest, Res extends GenerateResponse | CompareResponse>(m: Multiplexer<Req, Res>) => {
    closers.push(() => m.close());
    return m;
  };
  try {
    const oracleClient = connect(createClient(PreferenceOracle, await serveLocal(await serviceFactories.oracle(config), "oracle"), config.client));
    const generators: Multiplexer<GenerateRequest, GenerateResponse>[] = [];
    for (const [i, modelDir] of modelDirs.entries()) {
      const target = await serveLocal(await serviceFactories.generator({ ...config, generator: { ...config.generator, modelDir, optimizerTarget: "" } }), `generator-${i}`);
      const client = connect(createClient(Generator, target, config.client));
      await client.waitForReady(60_000);
      generators.push(
        multiplex(createMultiplexer<GenerateRequest, GenerateResponse>((requests, signal) => client.generate(requests, { signal }), { name: `generator ${i}`, sizeOf: (r) => toBinary(GenerateRequestSchema, r).length, maxMessageBytes: config.client.maxMessageBytes })),
      );
    }
    await oracleClient.waitForReady(60_000);
    const oracle = multiplex(
      createMultiplexer<CompareRequest, CompareResponse>((requests, signal) => oracleClient.compare(requests, { signal }), { name: "oracle", sizeOf: (r) => toBinary(CompareRequestSchema, r).length, maxMessageBytes: config.client.maxMessageBytes }),
    );
    const splits = splitPrompts(await loadPrompts(pipeline.prompts), { iterations: pipeline.iterations, perIteration: pipeline.promptsPerIteration, evalCount: pipeline.evalPrompts, seed: pipeline.seed });
    const judged = await headToHead({
      policies: runs.map((run, i) => ({ name: run.name, generator: generators[i], policyVersion: 0 })),
      oracle,
      prompts: splits.evaluation,
      samples: pipeline.evalSamples,
      // Other seeds than the runs' evaluation (pipeline.seed · 7919): fresh samples of the final policies.
      seed: pipeline.seed * 7919 + 1,
      concurrency: pipeline.generateConcurrency,
      sampling: pipeline.sampling,
    });
    if (!probes) return { headToHead: judged };
    // The base's probe exploitability, measured as the runs measure their policies' (the same evaluation seeds).
    const base = await evaluate({
      generator: generators[runs.length],
      oracle,
      prompts: splits.evaluation,
      newVersion: 0,
      baseVersion: 0,
      previousVersion: 0,
      samples: pipeline.evalSamples,
      probes: pipeline.probes,
      seed: pipeline.seed * 7919,
      concurrency: pipeline.generateConcurrency,
      sampling: pipeline.sampling,
    });
    if (base.probeExploitability === undefined || base.probeWinRates === undefined) throw new RpcError(Code.FAILED_PRECONDITION, "evaluation of the base policy: the oracle refused every probe judgement");
    return { headToHead: judged, baseProbe: { exploitability: base.probeExploitability, winRates: base.probeWinRates } };
  } finally {
    for (const close of closers.reverse()) close();
    await Promise.all(servers.map((s) => s.shutdown()));
    for (const instance of instances) await instance.close();
  }
}
