/**
 * `sppo` — the command-line entry point (bin/sppo.mjs loads this file). Each command lives in cli/commands/ and
 * exports `register(program)`; only commands that work are registered, so `--help` lists exactly what runs.
 */
import { Command } from "commander";
import { readFileSync } from "node:fs";
import { RpcError } from "../lib/errors.js";
import * as compare from "./commands/compare.js";
import * as compareRuns from "./commands/compare-runs.js";
import * as dashboard from "./commands/dashboard.js";
import * as exportCommand from "./commands/export.js";
import * as nash from "./commands/nash.js";
import * as sample from "./commands/sample.js";
import * as score from "./commands/score.js";
import * as run from "./commands/run.js";
import * as serve from "./commands/serve.js";
import * as watch from "./commands/watch.js";

const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };

const program = new Command("sppo")
  .description("Self-Play Preference Optimization: generator, preference oracle and optimizer services and the self-play loop")
  .version(version, "-V, --version", "print the version of sppo")
  .showHelpAfterError();

for (const command of [run, compareRuns, watch, dashboard, serve, nash, sample, score, compare, exportCommand]) command.register(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // Expected failures (bad config, bad input, a service's refusal) print one clear line; a bug keeps its stack.
  if (RpcError.from(err).userFacing) {
    process.stderr.write(`sppo: ${(err as Error).message}\n`);
  } else {
    process.stderr.write(`sppo: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  process.exitCode = 1;
}
