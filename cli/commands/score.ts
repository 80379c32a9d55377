/**
 * `sppo score [--model DIR] --prompt TEXT --response TEXT [--no-eos] [--backend B] [--config FILE] [--json]`:
 * the summed log-probability of the response's tokens given the prompt under a policy (tfjs engine), EOS appended
 * by default as sampled responses end with it. `--json` prints {"logprob": <sum>, "tokens": <count>, "engine": ...}.
 */
import type { Command } from "commander";
import { loadConfig } from "../../lib/config/load.js";
import { initBackend, loadModel, scoreText } from "../../models/index.js";
import { backendOption } from "./sample.js";

interface ScoreFlags {
  model?: string;
  prompt: string;
  response: string;
  eos: boolean;
  backend?: "auto" | "tensorflow" | "wasm" | "cpu";
  config?: string;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command("score")
    .description("summed log-prob of a response given a prompt under a policy model directory (tfjs engine)")
    .option("--model <dir>", "model directory (default: config engine.modelDir, assets/policy)")
    .requiredOption("--prompt <text>", "the user prompt (rendered through the chat template when the model has one)")
    .requiredOption("--response <text>", "the response to score")
    .option("--no-eos", "do not append the end-of-sequence token to the response")
    .addOption(backendOption())
    .option("--config <file>", "YAML or JSON config file")
    .option("--json", "print one JSON object")
    .action(async (flags: ScoreFlags) => {
      const config = loadConfig({ file: flags.config, overrides: { engine: { backend: flags.backend } } });
      const backend = await initBackend(config.engine.backend);
      const loaded = loadModel(flags.model ?? config.engine.modelDir);
      try {
        const [score] = scoreText(loaded, [{ prompt: flags.prompt, response: flags.response }], { appendEos: flags.eos });
        if (flags.json) {
          process.stdout.write(`${JSON.stringify({ logprob: score.logprob, tokens: score.tokens, engine: `tfjs/${backend.name}` })}\n`);
        } else {
          process.stdout.write(`logprob ${score.logprob.toFixed(4)} over ${score.tokens} tokens\n`);
        }
      } finally {
        loaded.model.dispose();
      }
    });
}
