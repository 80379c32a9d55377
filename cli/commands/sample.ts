/**
 * `sppo sample [--model DIR] --prompt TEXT [-k N] [--seed S] [--temperature T] [--top-p P] [--top-k K]
 *  [--max-new-tokens N] [--engine onnx|tfjs] [--backend B] [--config FILE] [--json]`: samples K responses from a
 * policy on onnxruntime (models/onnx, the default) or the tfjs engine (models/) and prints them, one per line, or as
 * one JSON object with the engine that ran and each response's ids and log-prob.
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import type { SamplingParams } from "../../gen/sppo/v1/generator_pb.js";
import type { LoadedModel, TextSample } from "../../models/index.js";
import type { OrtPolicy, PolicyOperation } from "../../models/onnx/index.js";

/** Commander parser for a number within [min, max] (integers when `integer`), naming the flag on error. */
export function numberIn(flag: string, min: number, max: number, integer = false): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      throw new InvalidArgumentError(`${flag} must be ${integer ? "an integer" : "a number"} in [${min}, ${max}], got ${value}`);
    }
    return n;
  };
}

export const engineOption = () =>
  new Option("--engine <name>", "inference engine: onnx (onnxruntime, config engine.onnx) or tfjs").choices(["onnx", "tfjs"]).default("onnx");

export const backendOption = () => new Option("--backend <name>", "tfjs backend (default: config engine.backend, auto)").choices(["auto", "tensorflow", "wasm", "cpu"]);

/** The flags `sppo sample` and `sppo score` share: which policy, on which engine, and how to print. */
export interface PolicyFlags {
  model?: string;
  prompt: string;
  backend?: "auto" | "tensorflow" | "wasm" | "cpu";
  engine: "onnx" | "tfjs";
  config?: string;
  json?: boolean;
}

/** Adds --model and --prompt, the first options of `sppo sample` and `sppo score`. */
export function addModelOptions(command: Command): Command {
  return command
    .option("--model <dir>", "model directory (default: config engine.modelDir, assets/policy)")
    .requiredOption("--prompt <text>", "the user prompt (rendered through the chat template when the model has one)");
}

/** Adds --engine, --backend, --config and --json, the last options of `sppo sample` and `sppo score`. */
export function addEngineOptions(command: Command): Command {
  return command
    .addOption(engineOption())
    .addOption(backendOption())
    .option("--config <file>", "YAML or JSON config file")
    .option("--json", "print one JSON object");
}

/** What a command does with the loaded policy; `engine` is the engine's name as printed. */
export interface PolicyUse {
  onnx(policy: OrtPolicy, engine: string): Promise<void>;
  tfjs(loaded: LoadedModel, engine: string): Promise<void>;
}

/**
 * Loads the policy `flags` name (--model, else the config's engine.modelDir) on the engine --engine picks — on
 * onnxruntime with the config's engine.onnx options and the sessions `prepare` names (its default when undefined), on
 * tfjs with the backend --backend or the config picks — runs `use` on it and disposes of it, also when `use` throws.
 */
export async function withPolicy(flags: PolicyFlags, prepare: readonly PolicyOperation[] | undefined, use: PolicyUse): Promise<void> {
  // Loaded here, not at the top: cli/main.ts imports every command's declaration; an engine (tfjs, onnxruntime)
  // loads once the config has been read, and only the one asked for.
  const { loadConfig } = await import("../../lib/config/load.js");
  const config = loadConfig({ file: flags.config, overrides: { engine: { backend: flags.backend } } });
  if (flags.engine === "onnx") {
    const { createOrtPolicy } = await import("../../models/onnx/index.js");
    const policy = await createOrtPolicy(flags.model ?? config.engine.modelDir, prepare === undefined ? config.engine.onnx : { ...config.engine.onnx, prepare });
    try {
      await use.onnx(policy, policy.name);
    } finally {
      await policy.dispose();
    }
    return;
  }
  const { initBackend, loadModel } = await import("../../models/index.js");
  const backend = await initBackend(config.engine.backend);
  const loaded = loadModel(flags.model ?? config.engine.modelDir);
  try {
    await use.tfjs(loaded, `tfjs/${backend.name}`);
  } finally {
    loaded.model.dispose();
  }
}

/** The flags of `sppo sample`: the sampling ones are sppo.v1.SamplingParams's fields (a number seed, as the samplers take). */
interface SampleFlags extends PolicyFlags, Required<Pick<SamplingParams, "temperature" | "topP" | "topK" | "maxNewTokens">> {
  k: number;
  seed: number;
}

export function register(program: Command): void {
  const command = addModelOptions(program.command("sample").description("sample responses to a prompt from a policy model directory (onnxruntime or tfjs engine)"))
    .option("-k, --k <n>", "responses to sample", numberIn("-k", 1, 4096, true), 1)
    .option("--seed <s>", "seed of the sampler", numberIn("--seed", 0, Number.MAX_SAFE_INTEGER, true), 0)
    .option("--temperature <t>", "softmax temperature (0 = greedy)", numberIn("--temperature", 0, 100), 1)
    .option("--top-p <p>", "nucleus mass in (0, 1]", numberIn("--top-p", Number.MIN_VALUE, 1), 1)
    .option("--top-k <k>", "keep the k most likely tokens (0 = off)", numberIn("--top-k", 0, 1e9, true), 0)
    .option("--max-new-tokens <n>", "most tokens per response, EOS included", numberIn("--max-new-tokens", 1, 1e6, true), 64);
  addEngineOptions(command).action(async (flags: SampleFlags) => {
    const options = { k: flags.k, seed: flags.seed, temperature: flags.temperature, topP: flags.topP, topK: flags.topK, maxNewTokens: flags.maxNewTokens };
    await withPolicy(flags, undefined, {
      async onnx(policy, engine) {
        const { sampleTextOnnx } = await import("../../models/onnx/index.js");
        const [samples] = await sampleTextOnnx(policy, [flags.prompt], options);
        printSamples(flags, engine, samples);
      },
      async tfjs(loaded, engine) {
        const { sampleText } = await import("../../models/index.js");
        const [samples] = sampleText(loaded, [flags.prompt], options);
        printSamples(flags, engine, samples);
      },
    });
  });
}

function printSamples(flags: SampleFlags, engine: string, samples: TextSample[]): void {
  if (flags.json) {
    const out = {
      prompt: flags.prompt,
      engine,
      samples: samples.map((s) => ({ text: s.text, tokenIds: s.tokenIds, logprob: s.logprob, tokens: s.tokenIds.length, finished: s.finished })),
      peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024), // the command's memory high-water mark
    };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } else {
    for (const s of samples) process.stdout.write(`${s.text}\n`);
  }
}
