/**
 * `sppo export --model DIR --out FILE.onnx [--kind causal-lm|step|score] [--external-data] [--dtype float32|float16]
 * [--json]`: writes a policy model directory (config.json + model.safetensors or shards) as an ONNX graph built by
 * models/onnx, weights included — inside the file, or in FILE.onnx.data beside it (ONNX external data: past 2 GiB,
 * with --external-data, or for float16) — so that the aligned policy runs in any ONNX runtime. The default kind is HF Optimum's decoder-with-past interface: input_ids,
 * attention_mask, position_ids, past_key_values.N.key/value → logits, present.N.key/value (docs in
 * models/onnx/graph.ts). The tokenizer stays in DIR; the file names what it needs in its metadata (sppo.config).
 */
import { resolve } from "node:path";
import { type Command, Option } from "commander";

interface ExportFlags {
  model: string;
  out: string;
  kind: "causal-lm" | "step" | "score";
  externalData?: boolean;
  dtype: "float32" | "float16";
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command("export")
    .description("export a policy model directory to an ONNX file (KV cache as inputs/outputs, weights included)")
    .requiredOption("--model <dir>", "model directory (config.json, model.safetensors)")
    .requiredOption("--out <file>", "the .onnx file to write")
    .addOption(
      new Option("--kind <kind>", "causal-lm: logits of every position (serving); step: last position only; score: summed response log-probs")
        .choices(["causal-lm", "step", "score"])
        .default("causal-lm"),
    )
    .option("--external-data", "write the weights to FILE.onnx.data beside the graph (always done past 2 GiB)")
    .addOption(new Option("--dtype <dtype>", "storage of the weight matrices (float16 implies --external-data)").choices(["float32", "float16"]).default("float32"))
    .option("--json", "print one JSON object")
    .action(async (flags: ExportFlags) => {
      const [{ exportPolicy }, { Code, RpcError }] = await Promise.all([import("../../models/onnx/index.js"), import("../../lib/errors.js")]);
      const started = performance.now();
      let result: ReturnType<typeof exportPolicy>;
      try {
        const externalData = flags.externalData || flags.dtype === "float16" ? true : "auto";
        result = exportPolicy(resolve(flags.model), resolve(flags.out), { kind: flags.kind, externalData, dtype: flags.dtype });
      } catch (err) {
        // A bad option (TypeError naming it) is the user's to fix, like a bad model directory.
        throw err instanceof TypeError || err instanceof RangeError ? RpcError.from(err, Code.INVALID_ARGUMENT) : err;
      }
      const ms = Math.round(performance.now() - started);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ ...result, ms })}\n`);
      } else {
        const weights = result.externalData ? `, weights in ${result.externalData} (${((result.externalBytes ?? 0) / 2 ** 20).toFixed(1)} MiB, ${result.dtype})` : "";
        process.stdout.write(`wrote ${result.file} (${result.family}, ${result.kind}, ${(result.bytes / 2 ** 20).toFixed(1)} MiB${weights}) in ${ms} ms\n`);
        process.stdout.write(`inputs:  ${result.inputs.join(", ")}\noutputs: ${result.outputs.join(", ")}\n`);
      }
    });
}
