/**
 * The self-play loop on the embedded default task, one iteration on the same prompts three ways:
 *   overlapped over gRPC (the default), overlapped in-process (direct calls, no sockets), and sequential over gRPC
 *   (generate all, then rank all, then train — as the official scripts do).
 * Rows: the three iteration times, overlapped ÷ sequential (target ≤ 0.8) and the gRPC overhead over in-process
 * (target ≤ 5%). Run: node --import tsx bench/run.ts --only pipeline [--quick]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_TASK_CONFIG } from "../cli/commands/run.js";
import { loadConfig } from "../lib/config/load.js";
import { runSelfPlay } from "../pipeline/run.js";
import type { BenchGroup, BenchRow } from "./row.js";

async function once(schedule: "overlapped" | "sequential", transport: "grpc" | "in-process", prompts: number): Promise<number> {
  const out = mkdtempSync(join(tmpdir(), "sppo-bench-pipeline-"));
  try {
    const config = loadConfig({
      file: DEFAULT_TASK_CONFIG,
      env: {},
      overrides: {
        server: { metricsPort: -1 },
        pipeline: { iterations: 1, promptsPerIteration: prompts, evalPrompts: 2, evalSamples: 1, telemetryPort: -1, progress: false, schedule },
      },
    });
    const started = performance.now();
    await runSelfPlay({ config, outDir: out, transport });
    return (performance.now() - started) / 1000;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

const bench: BenchGroup = async ({ quick }) => {
  const prompts = quick ? 24 : 96;
  // Interleave the variants so that machine noise hits them alike; keep the best of the repeats.
  const repeats = quick ? 1 : 2;
  const best = { overlapped: Number.POSITIVE_INFINITY, inProcess: Number.POSITIVE_INFINITY, sequential: Number.POSITIVE_INFINITY };
  for (let r = 0; r < repeats; r++) {
    best.overlapped = Math.min(best.overlapped, await once("overlapped", "grpc", prompts));
    best.inProcess = Math.min(best.inProcess, await once("overlapped", "in-process", prompts));
    best.sequential = Math.min(best.sequential, await once("sequential", "grpc", prompts));
  }
  const rows: BenchRow[] = [
    { metric: "pipeline.iteration_seconds_overlapped_grpc", value: best.overlapped, unit: "s", prompts },
    { metric: "pipeline.iteration_seconds_overlapped_in_process", value: best.inProcess, unit: "s", prompts },
    { metric: "pipeline.iteration_seconds_sequential_grpc", value: best.sequential, unit: "s", prompts },
    { metric: "pipeline.overlapped_over_sequential", value: best.overlapped / best.sequential, unit: "ratio", target: "<= 0.8" },
    { metric: "pipeline.grpc_overhead", value: best.overlapped / best.inProcess - 1, unit: "fraction", target: "<= 0.05" },
  ];
  return rows;
};

export default bench;
