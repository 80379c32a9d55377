/**
 * The PyTorch side of the benchmarks: the reference model size (../shared/bench/reference-model.json) and a runner for
 * PyTorch scripts that print one JSON line. Results are cached per script and arguments, so row groups that compare
 * against the same PyTorch work (bench/engine.ts and bench/onnx.ts both use torch_reference.py) run it once per
 * `npm run bench`. A helper module, not a row group (no default export).
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** ../shared/bench beside the checkout, or `SPPO_SHARED_BENCH` (a checkout elsewhere, e.g. a git worktree). */
export const SHARED_BENCH = process.env.SPPO_SHARED_BENCH ?? join(dirname(fileURLToPath(import.meta.url)), "..", "..", "shared", "bench");
const PYTHON = "/usr/bin/python3";
/** GNU time: reports a child's peak RSS (Debian package `time`). */
const TIME = "/usr/bin/time";

/** reference-model.json. */
export interface Reference {
  vocab_size: number;
  d_model: number;
  n_layers: number;
  n_heads: number;
  context: number;
  sampling: { batch: number; prompt_tokens: number; new_tokens: number; temperature: number };
  training: { batch: number; sequence_tokens: number };
}

export function readReference(): Reference {
  return JSON.parse(readFileSync(join(SHARED_BENCH, "reference-model.json"), "utf8")) as Reference;
}

const cache = new Map<string, unknown>();

/**
 * Runs `script args…` with Debian's python3 when it has torch and returns its last stdout line as JSON, with
 * `peak_rss_mb` (the Python process's high-water mark, through GNU time where installed) added; undefined, with the
 * reason on stderr, when torch is absent or the script fails (an overloaded machine can stall torch's OpenMP threads
 * for minutes: `SPPO_BENCH_TORCH_TIMEOUT_MS`, default 15 min). `group` names the caller in messages.
 */
export function runTorch<T>(script: string, args: string[], group: string): (T & { peak_rss_mb?: number }) | undefined {
  const key = JSON.stringify([script, args]);
  if (cache.has(key)) return cache.get(key) as (T & { peak_rss_mb?: number }) | undefined;
  let result: (T & { peak_rss_mb?: number }) | undefined;
  if (existsSync(PYTHON) && existsSync(script)) {
    const scratch = mkdtempSync(join(tmpdir(), "sppo-bench-torch-"));
    try {
      execFileSync(PYTHON, ["-c", "import torch"], { stdio: "ignore" });
      const rssFile = join(scratch, "rss");
      const timed = existsSync(TIME);
      const [file, argv] = timed ? [TIME, ["-f", "%M", "-o", rssFile, PYTHON, script, ...args]] : [PYTHON, [script, ...args]];
      const out = execFileSync(file, argv, { encoding: "utf8", timeout: Number(process.env.SPPO_BENCH_TORCH_TIMEOUT_MS ?? 900_000) });
      const parsed = JSON.parse(out.trim().split("\n").at(-1) as string) as T & { peak_rss_mb?: number };
      result = parsed;
      if (timed) parsed.peak_rss_mb = Math.round(Number(readFileSync(rssFile, "utf8").trim().split("\n").at(-1)) / 1024);
    } catch (err) {
      process.stderr.write(`bench/${group}: no PyTorch numbers (${(err as Error).message.split("\n")[0]}); rows carry no torch ratio\n`);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  }
  cache.set(key, result);
  return result;
}
