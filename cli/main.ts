/**
 * `sppo` — the command-line entry point (bin/sppo.mjs loads this file). Each command lives in cli/commands/ and
 * exports `register(program)`; only commands that work are registered, so `--help` lists exactly what runs.
 *
 * Every command is declared at start-up but loads what it runs inside its action: a command file imports at its top
 * only commander, node's own modules and light declarations (`import type` for the rest), so that `sppo --help`, a
 * mistyped flag or `sppo watch` do not pay for tfjs, onnxruntime, grpc-js and zod (test/structure.test.ts checks it).
 */
import { Command } from "commander";
import { readFileSync } from "node:fs";
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
  const { RpcError } = await import("../lib/errors.js");
  if (RpcError.from(err).userFacing) {
    process.stderr.write(`sppo: ${(err as Error).message}\n`);
  } else {
    process.stderr.write(`sppo: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  process.exitCode = 1;
}
