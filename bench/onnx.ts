/**
 * onnxruntime engine benchmark (models/onnx) on the reference model of ../shared/bench/reference-model.json:
 * KV-cached sampling and batched scoring tokens/s, each beside PyTorch's number for the same work measured in the
 * same run (../shared/bench/torch_reference.py for sampling, bench/torch_score.py for scoring), and the weight
 * refresh time (new weights → new session), from memory and from a model directory.
 * Targets (issue 9): sampling ≥ 4× PyTorch, scoring ≥ 2× PyTorch, refresh ≤ 1 s.
 *
 *   node --import tsx bench/run.ts --only onnx [--quick]
 *   SPPO_BENCH_THREADS=N sets the threads of both engines (default 2, torch_reference.py's default).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRng } from "../lib/rng.js";
import { configToJson, gpt2Config, type ModelConfig, paramShapes, type RawTensor, writeSafetensors } from "../models/index.js";
import { createOrtPolicy } from "../models/onnx/index.js";
import type { BenchOptions, BenchRow } from "./row.js";
import { readReference, runTorch, SHARED_BENCH } from "./torch.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Random weights of the reference size (normal 0.02, norms 1), drawn from our own seeded generator. */
function referenceWeights(config: ModelConfig, seed: number): Map<string, RawTensor> {
  const out = new Map<string, RawTensor>();
  paramShapes(config).forEach(([name, shape], index) => {
    const rng = createRng(seed, index);
    const data = new Float32Array(shape.reduce((a, d) => a * d, 1));
    if (/ln_\d|ln_f/.test(name)) data.fill(name.endsWith(".weight") ? 1 : 0);
    else for (let i = 0; i < data.length; i++) data[i] = 0.02 * rng.normal();
    out.set(name, { shape, data });
  });
  return out;
}

/** A model directory as the optimizer writes one: config.json + model.safetensors. */
function saveWeights(dir: string, config: ModelConfig, weights: Map<string, RawTensor>): void {
  writeFileSync(join(dir, "config.json"), `${JSON.stringify(configToJson(config), null, 2)}\n`);
  writeSafetensors(join(dir, "model.safetensors"), weights);
}

export default async function onnxBench(options: BenchOptions): Promise<BenchRow[]> {
  const ref = readReference();
  const threads = Number(process.env.SPPO_BENCH_THREADS ?? 2);
  const reps = options.quick ? 1 : 3;
  const torchSample = runTorch<{ engine: string; threads: number; decode_tokens_per_s: number }>(join(SHARED_BENCH, "torch_reference.py"), [String(threads)], "onnx");
  const torchScore = runTorch<{ engine: string; threads: number; score_tokens_per_s: number }>(join(HERE, "torch_score.py"), [String(threads), String(options.quick ? 2 : 5)], "onnx");

  const config = gpt2Config({ vocab_size: ref.vocab_size, n_embd: ref.d_model, n_layer: ref.n_layers, n_head: ref.n_heads, n_positions: ref.context });
  const weights = referenceWeights(config, 0);
  const policy = await createOrtPolicy({ config, weights }, { intraOpThreads: threads, prepare: ["sample", "score"] });
  const common = { engine: "onnxruntime", threads, params: policy.parameters };
  const rng = createRng(1);
  const token = () => Math.floor(rng.next() * ref.vocab_size);
  const rows: BenchRow[] = [];

  // Sampling: batch × (prompt → new tokens) with the KV cache, at the reference temperature, no early stop.
  const { batch: SB, prompt_tokens: P, new_tokens: N, temperature } = ref.sampling;
  const prompts = Array.from({ length: SB }, () => Array.from({ length: P }, token));
  await policy.sample(prompts, { maxNewTokens: N, temperature, seed: 0 });
  const sampleMs: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t = performance.now();
    await policy.sample(prompts, { maxNewTokens: N, temperature, seed: r + 1 });
    sampleMs.push(performance.now() - t);
  }
  const sampleRate = (SB * N) / (median(sampleMs) / 1000);
  rows.push({
    metric: "onnx.sample_tokens_per_s",
    value: +sampleRate.toFixed(1),
    unit: "tokens/s",
    ...(torchSample ? { torch: torchSample.decode_tokens_per_s, ratio: +(sampleRate / torchSample.decode_tokens_per_s).toFixed(3) } : {}),
    target_ratio: 4,
    ...common,
    batch: SB,
    prompt_tokens: P,
    new_tokens: N,
    temperature,
  });

  // Scoring: 16 rows of 128 tokens (32 prompt, 96 response), one run, as bench/torch_score.py.
  const [SCB, SCT, SCP] = [16, 128, 32];
  const pairs = Array.from({ length: SCB }, () => ({ prompt: Array.from({ length: SCP }, token), response: Array.from({ length: SCT - SCP }, token) }));
  await policy.score(pairs, { batchSize: SCB });
  const scoreMs: number[] = [];
  for (let r = 0; r < (options.quick ? 2 : 5); r++) {
    const t = performance.now();
    await policy.score(pairs, { batchSize: SCB });
    scoreMs.push(performance.now() - t);
  }
  const scoreRate = (SCB * SCT) / (median(scoreMs) / 1000);
  rows.push({
    metric: "onnx.score_tokens_per_s",
    value: +scoreRate.toFixed(1),
    unit: "tokens/s",
    ...(torchScore ? { torch: torchScore.score_tokens_per_s, ratio: +(scoreRate / torchScore.score_tokens_per_s).toFixed(3) } : {}),
    target_ratio: 2,
    ...common,
    batch: SCB,
    tokens: SCT,
    prompt_tokens: SCP,
  });

  // Refresh: new weights in memory → graph bytes → a new sampling session, swapped in (what the generator does).
  const refreshes = [];
  for (let r = 0; r < (options.quick ? 2 : 5); r++) refreshes.push(await policy.refresh({ config, weights: referenceWeights(config, r + 1) }));
  const byTotal = [...refreshes].sort((a, b) => a.totalMs - b.totalMs);
  const mid = byTotal[Math.floor(byTotal.length / 2)];
  rows.push({
    metric: "onnx.refresh_ms",
    value: +mid.totalMs.toFixed(1),
    unit: "ms",
    target_ms: 1000,
    graph_ms: +mid.graphMs.toFixed(1),
    session_ms: +mid.sessionMs.toFixed(1),
    max_ms: +byTotal[byTotal.length - 1].totalMs.toFixed(1),
    ...common,
  });
  await policy.dispose();

  // Load from a model directory (config.json + model.safetensors), as a generator loading a pulled version does.
  const dir = mkdtempSync(join(tmpdir(), "sppo-bench-onnx-"));
  try {
    saveWeights(dir, config, weights);
    const loads: number[] = [];
    for (let r = 0; r < (options.quick ? 1 : 3); r++) {
      const t = performance.now();
      const p = await createOrtPolicy(dir, { intraOpThreads: threads });
      loads.push(performance.now() - t);
      await p.dispose();
    }
    rows.push({ metric: "onnx.load_dir_ms", value: +median(loads).toFixed(1), unit: "ms", target_ms: 1000, ...common });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (torchSample) rows.push({ metric: "onnx.torch_reference", value: torchSample.threads, unit: "threads", engine: torchSample.engine });
  return rows;
}
