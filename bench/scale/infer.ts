/**
 * One inference row of bench/scale.ts, in a process of its own (so that its peak RSS is its own): writes a GPT-2 of
 * the shape in MODEL.json (../shared/bench/reference-model-gpt2-small.json: GPT-2 small) as a model directory of
 * random weights (model-dir.ts), then loads it on onnxruntime as `sppo sample` / `sppo score` do and times the work
 * PyTorch does in the same run:
 *   --what sample: batch × (prompt_tokens → new_tokens) with the KV cache at the file's temperature (torch_reference.py)
 *   --what score:  16 rows × 128 tokens, the first 32 the prompt (bench/torch_score.py)
 * Prints one JSON line: tokens/s (median of the repeats), load time, the repeats' times, peak RSS.
 *
 *   node --import tsx bench/scale/infer.ts --what sample|score --model FILE [--threads N] [--reps N] [--batch N]
 */
import { readFileSync, rmSync } from "node:fs";
import { parseArgs } from "node:util";
import { createRng } from "../../lib/rng.js";
import { createOrtPolicy } from "../../models/onnx/index.js";
import type { Reference } from "../torch.js";
import { referenceConfig, writeRandomModelDir } from "./model-dir.js";

const { values } = parseArgs({
  options: {
    what: { type: "string" },
    model: { type: "string" },
    threads: { type: "string", default: "2" },
    reps: { type: "string", default: "3" },
    batch: { type: "string", default: "16" },
  },
});
const ref = JSON.parse(readFileSync(values.model as string, "utf8")) as Reference;
const threads = Number(values.threads);
const reps = Number(values.reps);
const config = referenceConfig(ref);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const dir = writeRandomModelDir(config, 0);
try {
  const loadStarted = performance.now();
  const policy = await createOrtPolicy(dir, { intraOpThreads: threads, prepare: [values.what === "score" ? "score" : "sample"] });
  const loadMs = performance.now() - loadStarted;
  const rng = createRng(1);
  const token = () => Math.floor(rng.next() * ref.vocab_size);
  const times: number[] = [];
  let tokens: number;
  let shape: Record<string, number>;
  if (values.what === "sample") {
    const { batch: B, prompt_tokens: P, new_tokens: N, temperature } = ref.sampling;
    const prompts = Array.from({ length: B }, () => Array.from({ length: P }, token));
    await policy.sample(prompts, { maxNewTokens: N, temperature, seed: 0 }); // warm-up
    for (let r = 0; r < reps; r++) {
      const t = performance.now();
      await policy.sample(prompts, { maxNewTokens: N, temperature, seed: r + 1 });
      times.push(performance.now() - t);
    }
    tokens = B * N;
    shape = { batch: B, prompt_tokens: P, new_tokens: N, temperature };
  } else {
    const [B, T, P] = [Number(values.batch), 128, 32];
    const pairs = Array.from({ length: B }, () => ({ prompt: Array.from({ length: P }, token), response: Array.from({ length: T - P }, token) }));
    await policy.score(pairs, { batchSize: B }); // warm-up
    for (let r = 0; r < reps; r++) {
      const t = performance.now();
      await policy.score(pairs, { batchSize: B });
      times.push(performance.now() - t);
    }
    tokens = B * T;
    shape = { batch: B, tokens: T, prompt_tokens: P };
  }
  const parameters = policy.parameters;
  await policy.dispose();
  process.stdout.write(
    `${JSON.stringify({
      what: values.what,
      tokens_per_s: +(tokens / (median(times) / 1000)).toFixed(1),
      ms: times.map((t) => Math.round(t)),
      load_ms: Math.round(loadMs),
      threads,
      params: parameters,
      ...shape,
      peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    })}\n`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
