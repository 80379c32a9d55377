/**
 * Runs a `sppo export`ed causal-lm graph (weights in FILE.onnx.data or inside) in a fresh onnxruntime session, as
 * any ONNX runtime would (nothing from sppo's engine), on the reference pairs of the model directory it came from
 * (scripts/scale/make_checkpoint.py --reference), and prints the largest |Δ log-prob| against PyTorch's.
 *
 *   node --import tsx scripts/scale/verify-export.ts FILE.onnx MODEL_DIR
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";

const [file, dir] = process.argv.slice(2);
if (!file || !dir) {
  process.stderr.write("usage: node --import tsx scripts/scale/verify-export.ts FILE.onnx MODEL_DIR\n");
  process.exit(2);
}
const reference = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8")) as { pairs: { prompt: number[]; response: number[]; logprob: number }[] };
const started = performance.now();
const session = await ort.InferenceSession.create(file);
const pastInputs = session.inputNames.filter((n) => n.startsWith("past_key_values."));
const meta = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, number>;
const heads = meta.num_key_value_heads ?? meta.n_head;
const headDim = (meta.hidden_size ?? meta.n_embd) / (meta.num_attention_heads ?? meta.n_head);
const diffs: number[] = [];
for (const { prompt, response, logprob } of reference.pairs) {
  const ids = [...prompt, ...response];
  const T = ids.length;
  const big = (xs: number[]) => BigInt64Array.from(xs, (x) => BigInt(x));
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor("int64", big(ids), [1, T]),
    attention_mask: new ort.Tensor("int64", big(ids.map(() => 1)), [1, T]),
    position_ids: new ort.Tensor("int64", big(ids.map((_, t) => t)), [1, T]),
  };
  for (const name of pastInputs) feeds[name] = new ort.Tensor("float32", new Float32Array(0), [1, heads, 0, headDim]);
  const logits = (await session.run(feeds, ["logits"])).logits;
  const V = logits.dims[2];
  const data = logits.data as Float32Array;
  let sum = 0;
  for (let j = 0; j < response.length; j++) {
    const row = data.subarray((prompt.length - 1 + j) * V, (prompt.length + j) * V);
    let max = Number.NEGATIVE_INFINITY;
    for (const x of row) max = Math.max(max, x);
    let z = 0;
    for (const x of row) z += Math.exp(x - max);
    sum += row[response[j]] - max - Math.log(z);
  }
  diffs.push(Math.abs(sum - logprob));
}
await session.release();
process.stdout.write(
  `${JSON.stringify({ file, max_abs_diff_nats: +Math.max(...diffs).toExponential(3), ms: Math.round(performance.now() - started), peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024) })}\n`,
);
