/**
 * `sppo score [--model DIR] --prompt TEXT --response TEXT [--no-eos] [--engine onnx|tfjs] [--backend B] [--config FILE]
 * [--json]`: the summed log-probability of the response's tokens given the prompt under a policy (onnxruntime by
 * default, or tfjs), EOS appended
 * by default as sampled responses end with it. `--json` prints {"logprob": <sum>, "tokens": <count>, "engine": ...}.
 */
import type { Command } from "commander";
import { loadConfig } from "../../lib/config/load.js";
import { initBackend, loadModel, scoreText } from "../../models/index.js";
import { createOrtPolicy, scoreTextOnnx } from "../../models/onnx/index.js";
import { backendOption, engineOption } from "./sample.js";

interface ScoreFlags {
  model?: string;
  prompt: string;
  response: string;
  eos: boolean;
  backend?: "auto" | "tensorflow" | "wasm" | "cpu";
  engine: "onnx" | "tfjs";
  config?: string;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command("score")
    .description("summed log-prob of a response given a prompt under a policy model directory (onnxruntime or tfjs engine)")
    .option("--model <dir>", "model directory (default: config engine.modelDir, assets/policy)")
    .requiredOption("--prompt <text>", "the user prompt (rendered through the chat template when the model has one)")
    .requiredOption("--response <text>", "the response to score")
    .option("--no-eos", "do not append the end-of-sequence token to the response")
    .addOption(engineOption())
    .addOption(backendOption())
    .option("--config <file>", "YAML or JSON config file")
    .option("--json", "print one JSON object")
    .action(async (flags: ScoreFlags) => {
      const config = loadConfig({ file: flags.config, overrides: { engine: { backend: flags.backend } } });
      if (flags.engine === "onnx") {
        const policy = await createOrtPolicy(flags.model ?? config.engine.modelDir, { ...config.engine.onnx, prepare: ["score"] });
        try {
          const [score] = await scoreTextOnnx(policy, [{ prompt: flags.prompt, response: flags.response }], { appendEos: flags.eos });
          printScore(flags, policy.name, score);
        } finally {
          await policy.dispose();
        }
        return;
      }
      const backend = await initBackend(config.engine.backend);
      const loaded = loadModel(flags.model ?? config.engine.modelDir);
      try {
        const [score] = scoreText(loaded, [{ prompt: flags.prompt, response: flags.response }], { appendEos: flags.eos });
        printScore(flags, `tfjs/${backend.name}`, score);
      } finally {
        loaded.model.dispose();
      }
    });
}

function printScore(flags: ScoreFlags, engine: string, score: { logprob: number; tokens: number }): void {
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ logprob: score.logprob, tokens: score.tokens, engine })}\n`);
  } else {
    process.stdout.write(`logprob ${score.logprob.toFixed(4)} over ${score.tokens} tokens (${engine})\n`);
  }
}
