/**
 * `sppo compare` (cli/commands/compare.ts, cli/compare-output.ts), run in-process: the printed JSON matrix of a model directory built by the
 * project, the --oracle forms, and bad input.
 * Run: node --import tsx --test test/services/oracle/compare-cli.test.ts
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { Command } from "commander";
import { DEFAULT_WEIGHTS } from "../../../scripts/make-default-oracle.js";
import { register } from "../../../cli/commands/compare.js";
import { type CompareFlags, compareOutput, resolveOracleConfig } from "../../../cli/compare-output.js";
import { assertMatrixClose, expectedMatrix, modelDir, tempDir } from "./fixtures.js";
import { RpcError } from "../../../lib/errors.js";

const tmp = tempDir();
after(() => tmp.remove());

/** What `sppo compare ...args` prints: the arguments go through the registered command's parser. */
async function compare(args: string[]): Promise<string> {
  let flags: CompareFlags | undefined;
  const program = new Command("sppo").exitOverride();
  register(program);
  program.commands[0].action((parsed: CompareFlags) => {
    flags = parsed;
  });
  await program.parseAsync(["node", "sppo", "compare", ...args]);
  return compareOutput(flags!);
}

describe("sppo compare", () => {
  it("prints {matrix} for a reward model directory (kind from its oracle_config.json)", async () => {
    const dir = modelDir(tmp.dir, "reward", "reward");
    const prompt = "tell me about the bird.";
    const candidates = ["the bird is bright.", "the bird is ugly and noisy.", "the ship is calm."];
    const out = await compare(["--oracle", dir, "--prompt", prompt, ...candidates.flatMap((c) => ["--candidate", c]), "--json"]);
    const parsed = JSON.parse(out) as { matrix: number[][] };
    assert.deepEqual(Object.keys(parsed), ["matrix"]);
    assertMatrixClose(parsed.matrix, expectedMatrix(prompt, candidates, DEFAULT_WEIGHTS));
  });

  it("prints a readable table with win rates by default", async () => {
    const out = await compare(["--oracle", "synthetic-intransitive", "--prompt", "the cat", "--candidate", "kind", "--candidate", "big"]);
    assert.match(out, /oracle: synthetic-intransitive/);
    assert.match(out, /\[0\]\s+0\.5000\s+0\.8808\s+0\.6904\s+kind/); // σ(2) and (0.5 + σ(2)) / 2
  });

  it("resolves --oracle forms and rejects what is neither", () => {
    assert.equal(resolveOracleConfig(undefined).backend, "pairwise-onnx");
    assert.equal(resolveOracleConfig("synthetic-adjectives").backend, "synthetic-adjectives");
    assert.deepEqual(resolveOracleConfig("grpc://127.0.0.1:50052").remote.target, "127.0.0.1:50052");
    assert.equal(resolveOracleConfig(modelDir(tmp.dir, "pw", "pairwise")).backend, "pairwise-onnx");
    assert.throws(() => resolveOracleConfig("/no/such/oracle"), /--oracle \/no\/such\/oracle: no such directory or file/);
  });

  it("fails with one clear message on a bad request", async () => {
    await assert.rejects(
      compare(["--oracle", "synthetic-adjectives", "--prompt", "the cat", "--candidate", "kind"]),
      (err: unknown) => err instanceof RpcError && err.userFacing && /candidates: needs at least 2 candidates, got 1/.test((err as Error).message),
    );
  });
});
