/**
 * Policy-engine benchmark (tfjs, models/): training tokens/s and KV-cached sampling tokens/s on the reference model
 * of ../shared/bench/reference-model.json, with peak memory, next to PyTorch's numbers for the same work measured in
 * the same run by ../shared/bench/torch_reference.py (when Debian's /usr/bin/python3 has torch); plus what the wasm
 * BatchMatMul fix of models/backend.ts buys, kernel by kernel.
 *
 *   node --import tsx bench/run.ts --only engine [--quick]
 *   SPPO_BENCH_BACKEND=cpu|wasm|tensorflow|auto picks the tfjs backend (default auto).
 */
import { availableParallelism } from "node:os";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { createRng } from "../lib/rng.js";
import { Adam, type BackendName, DataParallel, GPT2LMHeadModel, initBackend, sampleIds, sequenceLogProbs, setWasmMatMulFix, type TokenBatch, valueAndGrads } from "../models/index.js";
import type { BenchOptions, BenchRow } from "./row.js";
import { readReference, runTorch, SHARED_BENCH } from "./torch.js";

interface TorchNumbers {
  engine: string;
  threads: number;
  decode_tokens_per_s: number;
  train_tokens_per_s: number;
}

const peakRssMb = () => Math.round(process.resourceUsage().maxRSS / 1024);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Best-of-n wall time of f in ms (after one warm-up call). */
function timeMs(f: () => void, n: number): number {
  f();
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    f();
    best = Math.min(best, performance.now() - t);
  }
  return best;
}

/** The wasm BatchMatMul fix, kernel by kernel: fixed vs tfjs's original on the shapes a train step uses. */
function matMulRows(quick: boolean): BenchRow[] {
  const rows: BenchRow[] = [];
  const cases: [string, number[], number[], boolean, boolean][] = [
    ["transpose_b", [2048, 256], [1024, 256], false, true],
    ["transpose_a", [2048, 256], [2048, 1024], true, false],
    ["batched_attention", [64, 128, 64], [64, 64, 128], false, false],
  ];
  for (const [name, sa, sb, ta, tb] of cases) {
    const a = tf.randomNormal(sa);
    const b = tf.randomNormal(sb);
    const M = ta ? sa[sa.length - 1] : sa[sa.length - 2];
    const K = ta ? sa[sa.length - 2] : sa[sa.length - 1];
    const N = tb ? sb[sb.length - 2] : sb[sb.length - 1];
    const batch = sa.length > 2 ? sa[0] : 1;
    const gflop = (2 * batch * M * K * N) / 1e9;
    const run = () => tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D, ta, tb).dispose();
    const fixed = timeMs(run, quick ? 1 : 3);
    setWasmMatMulFix(false);
    const original = timeMs(run, 1);
    setWasmMatMulFix(true);
    tf.dispose([a, b]);
    rows.push({
      metric: `engine.wasm.matmul_${name}`,
      value: +(gflop / (fixed / 1000)).toFixed(2),
      unit: "GFLOP/s",
      original_gflops: +(gflop / (original / 1000)).toFixed(2),
      speedup: +(original / fixed).toFixed(1),
      shapes: `${JSON.stringify(sa)}·${JSON.stringify(sb)} tA=${ta} tB=${tb}`,
    });
  }
  return rows;
}

export default async function engineBench(options: BenchOptions): Promise<BenchRow[]> {
  const ref = readReference();
  const torch = runTorch<TorchNumbers>(join(SHARED_BENCH, "torch_reference.py"), ["2"], "engine");
  const backend = await initBackend((process.env.SPPO_BENCH_BACKEND as BackendName) ?? "auto");
  const common = { backend: backend.name, threads: 1 };
  const model = new GPT2LMHeadModel(
    { vocab_size: ref.vocab_size, n_embd: ref.d_model, n_layer: ref.n_layers, n_head: ref.n_heads, n_positions: ref.context },
    undefined,
    0,
  );
  const params = [...model.params.values()].reduce((s, p) => s + p.size, 0);
  const rng = createRng(1);
  const rows: BenchRow[] = [];

  // Sampling: batch × (prompt → new tokens) with the KV cache, temperature as the reference.
  const { batch: SB, prompt_tokens: P, new_tokens: N, temperature } = ref.sampling;
  const prompts = Array.from({ length: SB }, () => Array.from({ length: P }, () => Math.floor(rng.next() * ref.vocab_size)));
  const sample = (seed: number) => sampleIds(model, prompts, { maxNewTokens: N, temperature, seed });
  sample(0);
  const sampleReps = options.quick ? 1 : 3;
  const sampleTimes: number[] = [];
  let samplePeak = 0;
  for (let r = 0; r < sampleReps; r++) {
    const t = performance.now();
    const info = await tf.profile(() => {
      sample(r + 1);
    });
    sampleTimes.push(performance.now() - t);
    samplePeak = Math.max(samplePeak, info.peakBytes);
  }
  // tf.profile adds bookkeeping; the rate uses the median of the profiled runs, a conservative figure.
  const sampleRate = (SB * N) / (median(sampleTimes) / 1000);
  rows.push({
    metric: "engine.sample_tokens_per_s",
    value: +sampleRate.toFixed(1),
    unit: "tokens/s",
    ...(torch ? { torch: torch.decode_tokens_per_s, ratio: +(sampleRate / torch.decode_tokens_per_s).toFixed(3) } : {}),
    ...common,
    params,
    batch: SB,
    prompt_tokens: P,
    new_tokens: N,
    peak_tensor_mb: +(samplePeak / 2 ** 20).toFixed(1),
    peak_rss_mb: peakRssMb(),
  });

  // Training: one Adam step on batch × sequence next-token cross-entropy, as the reference.
  const { batch: TB, sequence_tokens: TT } = ref.training;
  const ids = Array.from({ length: TB }, () => Array.from({ length: TT + 1 }, () => Math.floor(rng.next() * ref.vocab_size)));
  const batch: TokenBatch = {
    ids: tf.tensor2d(ids.map((r) => r.slice(0, TT)), [TB, TT], "int32"),
    targets: tf.tensor2d(ids.map((r) => r.slice(1)), [TB, TT], "int32"),
    attentionMask: tf.ones([TB, TT]),
    responseMask: tf.ones([TB, TT]),
    responseTokens: Array(TB).fill(TT),
    dispose() {
      tf.dispose([this.ids, this.targets, this.attentionMask, this.responseMask]);
    },
  };
  const adam = new Adam();
  const step = () => {
    const { value, grads } = valueAndGrads(model, () => sequenceLogProbs(model, batch).sum().div(-TB * TT) as tf.Scalar);
    adam.apply(model.params, grads, 1e-4);
    value.dataSync();
    tf.dispose([value, grads]);
  };
  step();
  const trainReps = options.quick ? 1 : 3;
  const trainTimes: number[] = [];
  let trainPeak = 0;
  for (let r = 0; r < trainReps; r++) {
    const t = performance.now();
    const info = await tf.profile(step);
    trainTimes.push(performance.now() - t);
    trainPeak = Math.max(trainPeak, info.peakBytes);
  }
  const stepMs = median(trainTimes);
  const trainRate = (TB * TT) / (stepMs / 1000);
  rows.push({
    metric: "engine.train_tokens_per_s",
    value: +trainRate.toFixed(1),
    unit: "tokens/s",
    ...(torch ? { torch: torch.train_tokens_per_s, ratio: +(trainRate / torch.train_tokens_per_s).toFixed(3) } : {}),
    ...common,
    params,
    batch: TB,
    sequence_tokens: TT,
    step_ms: +stepMs.toFixed(1),
    gflops: +((6 * params * TB * TT) / (stepMs / 1000) / 1e9).toFixed(2),
    peak_tensor_mb: +(trainPeak / 2 ** 20).toFixed(1),
    peak_rss_mb: peakRssMb(),
  });
  batch.dispose();

  // The same step data-parallel over worker threads (models/parallel.ts), one shard per core. Rows are
  // (first token → the next 128) pairs, so each row runs 129 positions, the last one masked: 0.8% extra work.
  const threads = availableParallelism();
  if (threads > 1) {
    const dp = await DataParallel.create(model, { threads });
    const pairs = ids.map((r) => ({ prompt: r.slice(0, 1), response: r.slice(1) }));
    const weights = Array(TB).fill(-1 / (TB * TT));
    const parallelStep = async () => {
      const { grads } = await dp.weightedLogProbGrads(pairs, weights);
      adam.apply(model.params, grads, 1e-4);
      tf.dispose(grads);
    };
    await parallelStep();
    const times: number[] = [];
    for (let r = 0; r < trainReps; r++) {
      const t = performance.now();
      await parallelStep();
      times.push(performance.now() - t);
    }
    await dp.close();
    const ms = median(times);
    const rate = (TB * TT) / (ms / 1000);
    rows.push({
      metric: "engine.train_tokens_per_s_parallel",
      value: +rate.toFixed(1),
      unit: "tokens/s",
      ...(torch ? { torch: torch.train_tokens_per_s, ratio: +(rate / torch.train_tokens_per_s).toFixed(3) } : {}),
      ...common,
      threads,
      params,
      batch: TB,
      sequence_tokens: TT,
      step_ms: +ms.toFixed(1),
      peak_rss_mb: peakRssMb(),
    });
  }
  adam.dispose();
  model.dispose();

  if (backend.name === "wasm") rows.push(...matMulRows(options.quick));
  if (torch) rows.push({ metric: "engine.torch_reference", value: torch.threads, unit: "threads", engine: torch.engine });
  return rows;
}
