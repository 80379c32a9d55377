/**
 * What a process's RSS shows of a weights file the onnxruntime sessions map (models/onnx/weights-file.ts): builds one
 * session (score or sample) over a model directory whose weights must be converted (BF16/F16), with the weights file
 * in PARENT, runs it once, and prints the file's size beside /proc/self/status's VmHWM, RssAnon, RssFile and
 * RssShmem (MB) after creation and after the run. The measurement behind weights files not going to /dev/shm by
 * default (docs/onnx.md).
 *
 *   node --import tsx scripts/scale/weights-rss.ts .cache/scale/smollm-135m-bf16 /dev/shm sample
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { createOrtPolicy } from "../../models/onnx/policy.js";

const [dir, parent, kind] = process.argv.slice(2);
if (!dir || !parent || (kind !== "score" && kind !== "sample")) {
  console.error("usage: weights-rss.ts MODEL_DIR PARENT score|sample");
  process.exit(2);
}
const status = () =>
  Object.fromEntries(
    readFileSync("/proc/self/status", "utf8")
      .split("\n")
      .filter((l) => /^(VmHWM|VmRSS|RssAnon|RssFile|RssShmem)/.test(l))
      .map((l) => {
        const [key, value] = l.split(":");
        return [key, Math.round(Number.parseInt(value, 10) / 1024)];
      }),
  );
const fileMb = () =>
  Math.round(
    readdirSync(parent)
      .filter((n) => n.startsWith(`sppo-onnx-${process.pid}-`))
      .reduce((a, n) => a + statSync(`${parent}/${n}/weights.bin`).size, 0) / 1e6,
  );
let t = performance.now();
const policy = await createOrtPolicy(dir, { prepare: [kind], weightsDir: parent, readTokenizer: false, intraOpThreads: 2 });
console.log(JSON.stringify({ parent, kind, created_ms: Math.round(performance.now() - t), file_mb: fileMb(), ...status() }));
t = performance.now();
if (kind === "score") await policy.score([{ prompt: [5, 6, 7, 8], response: Array.from({ length: 24 }, (_, i) => 10 + i) }]);
else await policy.sample([[5, 6, 7, 8], [5, 6, 7, 9]], { maxNewTokens: 8, seed: 1 });
console.log(JSON.stringify({ run_ms: Math.round(performance.now() - t), file_mb: fileMb(), ...status() }));
await policy.dispose();
