/**
 * Checks sppo's engines against PyTorch on a real-size model directory made by scripts/scale/make_checkpoint.py
 * --reference: scores its reference.json pairs (token ids, summed log-probs from an independent PyTorch forward) on
 * onnxruntime with float32 and float16 weights and on tfjs, and prints one JSON line per engine with the largest
 * |Δ log-prob| (nats) and the process's peak RSS so far.
 *
 *   node --import tsx scripts/scale/verify.ts DIR [--engines onnx,onnx-float16,tfjs]
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { initBackend, loadModel, scorePairs } from "../../models/index.js";
import { createOrtPolicy } from "../../models/onnx/index.js";

const { positionals, values } = parseArgs({ allowPositionals: true, options: { engines: { type: "string", default: "onnx,onnx-float16,tfjs" } } });
const dir = positionals[0];
if (!dir) {
  process.stderr.write("usage: node --import tsx scripts/scale/verify.ts DIR [--engines onnx,onnx-float16,tfjs]\n");
  process.exit(2);
}
const reference = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8")) as { engine: string; pairs: { prompt: number[]; response: number[]; logprob: number }[] };
const pairs = reference.pairs.map(({ prompt, response }) => ({ prompt, response }));
const peakRssMb = () => Math.round(process.resourceUsage().maxRSS / 1024);

for (const engine of values.engines.split(",")) {
  const started = performance.now();
  let logprobs: number[];
  if (engine === "tfjs") {
    await initBackend("auto");
    const { model } = loadModel(dir);
    logprobs = scorePairs(model, pairs, { batchSize: 1 }).map((s) => s.logprob);
    model.dispose();
  } else {
    const dtype = engine === "onnx-float16" ? "float16" : "float32";
    const policy = await createOrtPolicy(dir, { prepare: ["score"], dtype });
    logprobs = (await policy.score(pairs, { batchSize: 1 })).map((s) => s.logprob);
    await policy.dispose();
  }
  const diffs = logprobs.map((lp, i) => Math.abs(lp - reference.pairs[i].logprob));
  const tokens = reference.pairs.map((p) => p.response.length);
  process.stdout.write(
    `${JSON.stringify({
      dir,
      engine,
      against: reference.engine,
      max_abs_diff_nats: +Math.max(...diffs).toExponential(3),
      max_abs_diff_per_token: +Math.max(...diffs.map((d, i) => d / tokens[i])).toExponential(3),
      logprobs: logprobs.map((x) => +x.toFixed(5)),
      torch: reference.pairs.map((p) => +p.logprob.toFixed(5)),
      ms: Math.round(performance.now() - started),
      peak_rss_mb: peakRssMb(),
    })}\n`,
  );
}
