/**
 * One training route of bench/train.ts, in a process of its own (so that its peak RSS is its own): builds a GPT-2 of
 * a reference size (../shared/bench/reference-model*.json), then times optimizer steps of the optimizer service's
 * own train step (models/ `TrainStep`: SPPO loss on chosen/rejected pairs, the reference's optimizer, clipping,
 * the update) through one engine, and prints one JSON line.
 *
 *   node --import tsx bench/train/route.ts --route onnxruntime|tfjs|data-parallel --model FILE [--threads N] [--steps N]
 *
 * A step's rows are full: batch × sequence_tokens positions each (prompt 1 token, response the rest), every position
 * a real token, as PyTorch's cross-entropy step in torch_reference.py; tokens/s counts those positions.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { createRng } from "../../lib/rng.js";
import { Adam, GPT2LMHeadModel, initBackend, type Optimizer, RMSprop } from "../../models/index.js";
import { onnxTrainStep } from "../../models/onnx-train/index.js";
import { dataParallelStep } from "../../models/parallel-step.js";
import { type StepSample, type StepSettings, type TrainStep, tfjsStep } from "../../models/train-step.js";
import type { Reference } from "../torch.js";

const { values } = parseArgs({
  options: {
    route: { type: "string" },
    model: { type: "string" },
    threads: { type: "string", default: "0" },
    steps: { type: "string", default: "3" },
  },
});
const ref = JSON.parse(readFileSync(values.model as string, "utf8")) as Reference & { training: { optimizer?: string } };
const route = values.route as "onnxruntime" | "tfjs" | "data-parallel";
const threads = Number(values.threads);
const steps = Number(values.steps);

const backend = await initBackend("wasm");
const model = new GPT2LMHeadModel({ vocab_size: ref.vocab_size, n_embd: ref.d_model, n_layer: ref.n_layers, n_head: ref.n_heads, n_positions: ref.context }, undefined, 0);
const params = [...model.params.values()].reduce((s, p) => s + p.size, 0);
const kind = ref.training.optimizer === "rmsprop" ? "rmsprop" : "adam";
const { batch: B, sequence_tokens: T } = ref.training;

let engine: TrainStep;
let optimizer: Optimizer;
if (route === "onnxruntime") {
  const ort = onnxTrainStep({ intraOpThreads: threads });
  engine = ort;
  optimizer = ort.optimizer(kind);
} else {
  engine = route === "tfjs" ? tfjsStep : dataParallelStep({ threads: threads || undefined });
  optimizer = kind === "rmsprop" ? new RMSprop() : new Adam();
}

const rng = createRng(1);
const sample = (): StepSample => {
  const ids = Array.from({ length: T }, () => Math.floor(rng.next() * ref.vocab_size));
  return { prompt: ids.slice(0, 1), response: ids.slice(1), winRate: rng.next(), ref: -T * Math.log(ref.vocab_size) };
};
const groups = Array.from({ length: B / 2 }, () => [sample(), sample()]);
const settings: StepSettings = { loss: "sppo", eta: 1000, selection: "chosen_rejected", microBatches: 1, maxGradNorm: 1, learningRate: 1e-4 };

const stepMs: number[] = [];
const cpuMs: number[] = []; // this process's CPU time per step (user + system, every thread of it)
const losses: number[] = [];
let error: string | undefined;
try {
  for (let s = 0; s <= steps; s++) {
    const t = performance.now();
    const cpu = process.cpuUsage();
    const result = await engine.step(model, optimizer, groups, settings);
    if (s > 0) {
      // step 0 warms up (session build, kernel caches)
      stepMs.push(performance.now() - t);
      const used = process.cpuUsage(cpu);
      cpuMs.push((used.user + used.system) / 1000);
    }
    losses.push(result.loss);
  }
  await engine.close();
  optimizer.dispose();
  model.dispose();
} catch (err) {
  // A route that cannot run at this size (tfjs's wasm heap stops at 4 GiB) is a finding, reported as such.
  error = `${(err as Error).name}: ${(err as Error).message.split("\n")[0]}`;
}
const peakRssMb = Math.round(process.resourceUsage().maxRSS / 1024);
process.stdout.write(`${JSON.stringify({ route, threads, backend: backend.name, params, batch: B, sequence_tokens: T, optimizer: kind, step_ms: stepMs, cpu_ms: cpuMs, losses, error, peak_rss_mb: peakRssMb })}\n`);
process.exit(0);
