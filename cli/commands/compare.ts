/**
 * `sppo compare [--oracle DIR_OR_CONFIG] --prompt TEXT --candidate A --candidate B [...] [--json]`: asks a preference
 * oracle for the K×K matrix P_ij = P(candidate i ≻ candidate j | prompt) and prints it (`{"matrix": [[...], ...]}`
 * with --json). --oracle is an ONNX model directory (pairwise, or reward when its oracle_config.json says
 * kind "reward"), a YAML/JSON config file (its `oracle` section), a synthetic judge's name
 * ("synthetic-intransitive"), or grpc://HOST:PORT for an oracle service; without it the config's oracle is used
 * (the embedded default model).
 */
import type { Command } from "commander";
import type { CompareFlags } from "../compare-output.js";

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function register(program: Command): void {
  program
    .command("compare")
    .description("ask a preference oracle for the K×K matrix P(candidate i ≻ candidate j | prompt)")
    .option("--oracle <dir|config|name|grpc://target>", "model directory, config file, synthetic judge or oracle service (default: the config's oracle)")
    .requiredOption("--prompt <text>", "the prompt")
    .option("--candidate <text>", "a candidate response (repeat, K ≥ 2)", collect, [] as string[])
    .option("--json", 'print {"matrix": [[...], ...]} as JSON')
    .action(async (flags: CompareFlags) => {
      // Loaded here, not at the top: cli/main.ts imports every command's declaration.
      const { compareOutput } = await import("../compare-output.js");
      process.stdout.write(await compareOutput(flags));
    });
}
