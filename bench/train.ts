/**
 * Training routes, one row each, against PyTorch's train step measured in the same run (torch_reference.py, 2
 * threads): the optimizer service's own step (models/ `TrainStep`) through each engine, on the reference model
 * (../shared/bench/reference-model.json, Adam) and at GPT-2-small scale (reference-model-gpt2-small.json, RMSprop).
 * Each route runs in a child process (bench/train/route.ts), so `peak_rss_mb` is that route's own high-water mark.
 *
 *   node --import tsx bench/run.ts --only train [--quick]
 *
 * Rows `train.<model>.<route>`: value tokens/s (median step), `torch`, `ratio`, `step_ms` (each measured step),
 * `spread` (slowest ÷ fastest step), `cpu_ms` (the median step's CPU time, all threads of the route's process), `peak_rss_mb`,
 * `load_1m` (the machine's load average after the route), and on the one-thread rows
 * `torch_1t`/`ratio_1t` (PyTorch's train step on one thread too, bench/torch_train.py) and `ratio_cpu_1t` (the same
 * comparison in tokens per CPU-second: a thread that waits for a core spends no CPU time, so this is the ratio that
 * a loaded machine distorts least). Routes: onnxruntime
 * (models/onnx-train, the default engine) on all cores and on one; tfjs on one wasm thread; tfjs data-parallel over worker threads. At GPT-2 small only
 * onnxruntime (all cores, one) and one tfjs step run (a data-parallel replica per core would double the tfjs memory);
 * `--quick` runs only onnxruntime on all cores there.
 */
import { execFileSync } from "node:child_process";
import { availableParallelism, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchOptions, BenchRow } from "./row.js";
import { runTorch, SHARED_BENCH } from "./torch.js";

interface TorchStep {
  train_tokens_per_s: number;
  train_tokens_per_cpu_s: number;
}

interface TorchTrain {
  threads: number;
  train_tokens_per_s: number;
  train_step_ms: number;
}

interface RouteResult {
  route: string;
  threads: number;
  params: number;
  batch: number;
  sequence_tokens: number;
  optimizer: string;
  step_ms: number[];
  cpu_ms: number[];
  /** Set when the route could not train at this size. */
  error?: string;
  peak_rss_mb: number;
}

const here = dirname(fileURLToPath(import.meta.url));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function runRoute(route: string, model: string, threads: number, steps: number): RouteResult {
  const out = execFileSync(process.execPath, ["--import", "tsx", join(here, "train", "route.ts"), "--route", route, "--model", model, "--threads", String(threads), "--steps", String(steps)], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split("\n").at(-1) as string) as RouteResult;
}

export default async function trainBench(options: BenchOptions): Promise<BenchRow[]> {
  const cores = availableParallelism();
  const models: { name: string; file: string; routes: [string, number, number][] }[] = [
    {
      name: "reference",
      file: join(SHARED_BENCH, "reference-model.json"),
      routes: [
        ["onnxruntime", cores, options.quick ? 2 : 5],
        ["onnxruntime", 1, options.quick ? 1 : 3],
        ["tfjs", 1, options.quick ? 1 : 3],
        ...(cores > 1 ? ([["data-parallel", cores, options.quick ? 1 : 3]] as [string, number, number][]) : []),
      ],
    },
    {
      name: "gpt2_small",
      file: join(SHARED_BENCH, "reference-model-gpt2-small.json"),
      routes: [["onnxruntime", cores, options.quick ? 1 : 3], ...(options.quick ? [] : ([["onnxruntime", 1, 2], ["tfjs", 1, 1]] as [string, number, number][]))],
    },
  ];
  const rows: BenchRow[] = [];
  for (const { name, file, routes } of models) {
    const torch = runTorch<TorchTrain>(join(SHARED_BENCH, "torch_reference.py"), name === "reference" ? ["2"] : ["2", file], "train");
    // One thread against one thread, by wall clock and by CPU time (at GPT-2 small only outside --quick: a step
    // there takes PyTorch minutes on a loaded machine).
    const torch1 = name === "reference" || !options.quick ? runTorch<TorchStep>(join(here, "torch_train.py"), ["1", name === "reference" ? "3" : "2", file], "train") : undefined;
    for (const [route, threads, steps] of routes) {
      let r: RouteResult;
      try {
        r = runRoute(route, file, threads, steps);
      } catch (err) {
        rows.push({ metric: `train.${name}.${route}_${threads}t.error`, value: 1, unit: "error", error: (err as Error).message.split("\n")[0] });
        continue;
      }
      if (r.error) {
        rows.push({ metric: `train.${name}.${route}_${threads}t.error`, value: 1, unit: "error", error: r.error, params: r.params, peak_rss_mb: r.peak_rss_mb });
        continue;
      }
      const ms = median(r.step_ms);
      const rate = (r.batch * r.sequence_tokens) / (ms / 1000);
      rows.push({
        metric: `train.${name}.${route}_${threads}t`,
        value: +rate.toFixed(1),
        unit: "tokens/s",
        ...(torch ? { torch: torch.train_tokens_per_s, ratio: +(rate / torch.train_tokens_per_s).toFixed(3) } : {}),
        ...(torch1 && threads === 1
          ? {
              torch_1t: torch1.train_tokens_per_s,
              ratio_1t: +(rate / torch1.train_tokens_per_s).toFixed(3),
              ratio_cpu_1t: +((r.batch * r.sequence_tokens) / (median(r.cpu_ms) / 1000) / torch1.train_tokens_per_cpu_s).toFixed(3),
            }
          : {}),
        route,
        threads,
        params: r.params,
        batch: r.batch,
        sequence_tokens: r.sequence_tokens,
        optimizer: r.optimizer,
        step_ms: r.step_ms.map((t) => Math.round(t)),
        cpu_ms: Math.round(median(r.cpu_ms)),
        spread: +(Math.max(...r.step_ms) / Math.min(...r.step_ms)).toFixed(2),
        gflops: +((6 * r.params * r.batch * r.sequence_tokens) / (ms / 1000) / 1e9).toFixed(1),
        peak_rss_mb: r.peak_rss_mb,
        // The machine's 1-minute load average after the route: PyTorch's OpenMP threads suffer far more from
        // competing processes than ours, so a ratio taken under load flatters us (docs/training-speed.md §2).
        load_1m: +loadavg()[0].toFixed(1),
      });
    }
  }
  return rows;
}
