/**
 * Real-size rows (issue 14), at GPT-2-small scale (../shared/bench/reference-model-gpt2-small.json), each in a
 * process of its own so that its `peak_rss_mb` is its own, with PyTorch's numbers for the same work measured in the
 * same invocation (`torch_reference.py 2 reference-model-gpt2-small.json` for sampling, bench/torch_score.py for
 * scoring; weights drawn on the fly from the JSON's shape, never committed):
 *
 *   scale.sample_tokens_per_s   batch 20, 24 → 32 tokens, T 0.7, KV cache, onnxruntime        target ≥ 1.5× PyTorch
 *   scale.score_tokens_per_s    16 rows × 128 tokens (32 prompt)                               target ≥ 2× PyTorch
 *   scale.sync_ms               publish a 124M version, LoadPolicy over gRPC on loopback (pull, verify, rebuild
 *                               the sessions)                                                  target ≤ 8 s
 *   scale.run_peak_rss_mb       one embedded `sppo run` iteration on a 124M GPT-2 (16 prompts, K 4, 32 new tokens;
 *                               bench/scale/run-gpt2-small.yaml)                               target ≤ 4 GB, first
 *                               Generate answered ≤ 10 s after the process started
 *   scale.score_0_5b_s          `sppo score` of one response on a Qwen2.5-0.5B-shaped BF16 checkpoint
 *                                                                    target ≤ 10 s, peak RSS ≤ 1.5× float32 weights
 * The last two need checkpoints in the hub's layout with tokenizers, made by scripts/scale/make_checkpoint.py (an
 * independent PyTorch script; minutes, once) into .cache/scale/ (SPPO_SCALE_DIR); without python3-torch they are
 * skipped with the reason. Training speed at this scale is bench/train.ts's.
 *
 *   node --import tsx bench/run.ts --only scale [--quick]
 *   SPPO_BENCH_THREADS=N sets the threads of both engines (default 2, torch_reference.py's default);
 *   SPPO_BENCH_SCALE_RUN=0 leaves out the embedded-run row (the longest). A row that fails prints as
 *   `<metric>.error` with its reason (the run row with the peak RSS and first Generate it reached), the others still run.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchOptions, BenchRow } from "./row.js";
import { runTorch, SHARED_BENCH } from "./torch.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");
const PYTHON = "/usr/bin/python3";
const MODEL = join(SHARED_BENCH, "reference-model-gpt2-small.json");
const GB = 1024; // MB

/** Runs a node script (tsx) in a child process and returns its last stdout line as JSON. */
function child<T>(args: string[], env: NodeJS.ProcessEnv = {}): T {
  const out = execFileSync(process.execPath, ["--import", "tsx", ...args], {
    cwd: root,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 1 << 24,
    env: { ...process.env, SPPO_LOG_LEVEL: process.env.SPPO_LOG_LEVEL ?? "warn", ...env },
  });
  return JSON.parse(out.trim().split("\n").at(-1) as string) as T;
}

/** A checkpoint made by scripts/scale/make_checkpoint.py under the cache, made when missing; undefined (reason on stderr) without torch. */
function checkpoint(shape: string, dtype: "f32" | "bf16"): string | undefined {
  const dir = join(resolve(root, process.env.SPPO_SCALE_DIR ?? ".cache/scale"), dtype === "f32" ? shape : `${shape}-${dtype}`);
  if (existsSync(join(dir, "config.json")) && existsSync(join(dir, "tokenizer.json"))) return dir;
  try {
    process.stderr.write(`bench/scale: making ${dir} (scripts/scale/make_checkpoint.py, once)\n`);
    execFileSync(PYTHON, [join(root, "scripts", "scale", "make_checkpoint.py"), "--shape", shape, "--dtype", dtype, "--out", dir], { stdio: ["ignore", "ignore", "inherit"] });
    return dir;
  } catch (err) {
    process.stderr.write(`bench/scale: no ${shape} checkpoint (${(err as Error).message.split("\n")[0]}); its row is skipped\n`);
    return undefined;
  }
}

const ratio = (value: number, torch: number | undefined) => (torch ? { torch, ratio: +(value / torch).toFixed(3) } : {});

interface Infer {
  tokens_per_s: number;
  ms: number[];
  load_ms: number;
  threads: number;
  params: number;
  peak_rss_mb: number;
  [key: string]: unknown;
}

export default async function scaleBench(options: BenchOptions): Promise<BenchRow[]> {
  const threads = Number(process.env.SPPO_BENCH_THREADS ?? 2);
  const reps = options.quick ? 1 : 3;
  const rows: BenchRow[] = [];
  const torchSample = runTorch<{ decode_tokens_per_s: number; params: number; engine: string }>(join(SHARED_BENCH, "torch_reference.py"), [String(threads), MODEL], "scale");
  const torchScore = runTorch<{ score_tokens_per_s: number }>(join(here, "torch_score.py"), [String(threads), String(options.quick ? 2 : 3), MODEL, "16"], "scale");
  const torchRss = (t: { peak_rss_mb?: number } | undefined) => (t?.peak_rss_mb ? { torch_peak_rss_mb: t.peak_rss_mb } : {});

  const attempt = (metric: string, make: () => BenchRow) => {
    try {
      rows.push(make());
    } catch (err) {
      rows.push({ metric: `${metric}.error`, value: 1, unit: "error", error: (err as Error).message.split("\n")[0] });
    }
  };
  attempt("scale.sample_tokens_per_s", () => {
    const sample = child<Infer>(["bench/scale/infer.ts", "--what", "sample", "--model", MODEL, "--threads", String(threads), "--reps", String(reps)]);
    return { metric: "scale.sample_tokens_per_s", value: sample.tokens_per_s, unit: "tokens/s", ...ratio(sample.tokens_per_s, torchSample?.decode_tokens_per_s), target_ratio: 1.5, ...sample, ...torchRss(torchSample) };
  });
  attempt("scale.score_tokens_per_s", () => {
    const score = child<Infer>(["bench/scale/infer.ts", "--what", "score", "--model", MODEL, "--threads", String(threads), "--reps", String(reps), "--batch", "16"]);
    return { metric: "scale.score_tokens_per_s", value: score.tokens_per_s, unit: "tokens/s", ...ratio(score.tokens_per_s, torchScore?.score_tokens_per_s), target_ratio: 2, ...score, ...torchRss(torchScore) };
  });
  attempt("scale.sync_ms", () => {
    const sync = child<{ total_ms: number; peak_rss_mb: number }>(["bench/scale/sync.ts", "--model", MODEL, "--threads", String(threads)]);
    return { metric: "scale.sync_ms", value: sync.total_ms, unit: "ms", target_ms: 8000, ...sync };
  });
  const qwen = checkpoint("qwen2.5-0.5b", "bf16");
  if (qwen) attempt("scale.score_0_5b_s", () => score05b(qwen));
  // Last: the longest row (minutes on a loaded machine).
  const gpt2 = checkpoint("gpt2-small", "f32");
  if (gpt2 && process.env.SPPO_BENCH_SCALE_RUN !== "0") attempt("scale.run_peak_rss_mb", () => runRow(gpt2, torchSample));
  if (torchSample) rows.push({ metric: "scale.torch_reference", value: threads, unit: "threads", engine: torchSample.engine, torch_params: torchSample.params });
  return rows;
}

/** One embedded `sppo run` iteration on the 124M checkpoint: peak RSS, first Generate after start, iteration time. */
function runRow(dir: string, torch: { peak_rss_mb?: number } | undefined): BenchRow {
  const out = mkdtempSync(join(tmpdir(), "sppo-bench-run-"));
  const rssFile = join(out, "peak-rss-kb");
  // GNU time gives the peak RSS of a run that fails too (summary.json is written only by one that ends).
  const timed = existsSync("/usr/bin/time");
  const sppo = [join(root, "bin", "sppo.mjs"), "run", "--config", join(here, "scale", "run-gpt2-small.yaml"), "--out", join(out, "run")];
  const [file, args] = timed ? ["/usr/bin/time", ["-f", "%M", "-o", rssFile, process.execPath, ...sppo]] : [process.execPath, sppo];
  try {
    const started = Date.now();
    let failure: string | undefined;
    try {
      execFileSync(file, args, {
        cwd: root,
        encoding: "utf8",
        stdio: ["ignore", "ignore", "pipe"],
        maxBuffer: 1 << 26,
        env: { ...process.env, SPPO_LOG_LEVEL: process.env.SPPO_LOG_LEVEL ?? "warn", SPPO_GENERATOR__MODEL_DIR: dir, SPPO_OPTIMIZER__MODEL_DIR: dir },
      });
    } catch (err) {
      const stderr = String((err as { stderr?: string }).stderr ?? (err as Error).message);
      failure = stderr.trim().split("\n").filter((l) => l.startsWith("sppo:")).at(-1) ?? stderr.trim().split("\n").at(-1);
    }
    const read = (name: string) => (existsSync(join(out, "run", name)) ? readFileSync(join(out, "run", name), "utf8") : undefined);
    const summary = read("summary.json") ? (JSON.parse(read("summary.json") as string) as { peak_rss_mb: number; seconds: number; iterations: { seconds: number; win_rate_vs_base: number }[] }) : undefined;
    const events = (read("metrics.jsonl") ?? "").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
    const firstGenerate = events.find((e) => e.progress?.stage === "STAGE_GENERATE" && (e.progress.done ?? 0) >= 1);
    const firstGenerateS = firstGenerate ? (Date.parse(firstGenerate.time) - started) / 1000 : undefined;
    const peakRssMb = timed && existsSync(rssFile) ? Math.round(Number(readFileSync(rssFile, "utf8").trim().split("\n").at(-1)) / 1024) : summary?.peak_rss_mb;
    return {
      metric: failure ? "scale.run_peak_rss_mb.error" : "scale.run_peak_rss_mb",
      value: peakRssMb ?? 0,
      unit: "MB",
      ...(failure ? { error: failure } : {}),
      target_mb: 4 * GB,
      first_generate_s: firstGenerateS === undefined ? null : +firstGenerateS.toFixed(1),
      target_first_generate_s: 10,
      ...(summary ? { iteration_s: +summary.iterations[0].seconds.toFixed(1), run_s: +summary.seconds.toFixed(1), win_rate_vs_base: summary.iterations[0].win_rate_vs_base } : {}),
      wall_s: +((Date.now() - started) / 1000).toFixed(1),
      prompts: 16,
      samples_per_prompt: 4,
      new_tokens: 32,
      peak_rss_mb: peakRssMb ?? null,
      ...(torch?.peak_rss_mb ? { torch_train_process_peak_rss_mb: torch.peak_rss_mb } : {}),
    };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/** `sppo score` of one response on the 0.5B BF16 checkpoint, as a user runs it. */
function score05b(dir: string): BenchRow {
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  const started = performance.now();
  const out = execFileSync(
    process.execPath,
    [join(root, "bin", "sppo.mjs"), "score", "--model", dir, "--prompt", "Tell me about the moon", "--response", "The moon is a rock that circles the earth", "--json"],
    { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  );
  const seconds = (performance.now() - started) / 1000;
  const result = JSON.parse(out.trim().split("\n").at(-1) as string) as { logprob: number; tokens: number; peak_rss_mb: number };
  const { hidden_size: D, intermediate_size: I, num_hidden_layers: L, num_attention_heads: H, num_key_value_heads: KV, vocab_size: V } = config;
  const hd = D / H;
  const params = V * D + L * (D * (H + 2 * KV) * hd + (H + 2 * KV) * hd + H * hd * D + 3 * D * I + 2 * D) + D;
  const f32Mb = (params * 4) / 2 ** 20;
  return {
    metric: "scale.score_0_5b_s",
    value: +seconds.toFixed(1),
    unit: "s",
    target_s: 10,
    peak_rss_mb: result.peak_rss_mb,
    float32_weights_mb: Math.round(f32Mb),
    rss_over_weights: +(result.peak_rss_mb / f32Mb).toFixed(2),
    target_rss_over_weights: 1.5,
    params,
    tokens: result.tokens,
  };
}
