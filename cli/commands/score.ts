/**
 * `sppo score [--model DIR] --prompt TEXT --response TEXT [--no-eos] [--engine onnx|tfjs] [--backend B] [--config FILE]
 * [--json]`: the summed log-probability of the response's tokens given the prompt under a policy (onnxruntime by
 * default, or tfjs), EOS appended
 * by default as sampled responses end with it. `--json` prints {"logprob": <sum>, "tokens": <count>, "engine": ...,
 * "peak_rss_mb": <the process's peak resident memory>}.
 */
import type { Command } from "commander";
import { addEngineOptions, addModelOptions, type PolicyFlags, withPolicy } from "./sample.js";

interface ScoreFlags extends PolicyFlags {
  response: string;
  eos: boolean;
}

export function register(program: Command): void {
  const command = addModelOptions(
    program.command("score").description("summed log-prob of a response given a prompt under a policy model directory (onnxruntime or tfjs engine)"),
  )
    .requiredOption("--response <text>", "the response to score")
    .option("--no-eos", "do not append the end-of-sequence token to the response");
  addEngineOptions(command).action(async (flags: ScoreFlags) => {
    const pair = { prompt: flags.prompt, response: flags.response };
    await withPolicy(flags, ["score"], {
      async onnx(policy, engine) {
        const { scoreTextOnnx } = await import("../../models/onnx/index.js");
        const [score] = await scoreTextOnnx(policy, [pair], { appendEos: flags.eos });
        printScore(flags, engine, score);
      },
      async tfjs(loaded, engine) {
        const { scoreText } = await import("../../models/index.js");
        const [score] = scoreText(loaded, [pair], { appendEos: flags.eos });
        printScore(flags, engine, score);
      },
    });
  });
}

function printScore(flags: ScoreFlags, engine: string, score: { logprob: number; tokens: number }): void {
  if (flags.json) {
    const peakRssMb = Math.round(process.resourceUsage().maxRSS / 1024); // the command's memory high-water mark
    process.stdout.write(`${JSON.stringify({ logprob: score.logprob, tokens: score.tokens, engine, peak_rss_mb: peakRssMb })}\n`);
  } else {
    process.stdout.write(`logprob ${score.logprob.toFixed(4)} over ${score.tokens} tokens (${engine})\n`);
  }
}
