/**
 * What `sppo compare` does (cli/commands/compare.ts declares the command): the oracle an --oracle value stands for,
 * and the K×K matrix it gives, as JSON or as a table. Tests: test/services/oracle/compare-cli.test.ts.
 */
import { existsSync, statSync } from "node:fs";
import { loadConfig } from "../lib/config/load.js";
import { ORACLE_BACKENDS, type OracleConfig } from "../lib/config/oracle.js";
import { Code, RpcError } from "../lib/errors.js";
import { createOracle } from "../services/oracle/create-oracle.js";
import { readModelDirConfig } from "../services/oracle/model-dir.js";

/** The oracle config an --oracle value stands for (see the file comment). */
export function resolveOracleConfig(spec: string | undefined): OracleConfig {
  const base = loadConfig({}).oracle;
  if (spec === undefined) return base;
  if (spec.startsWith("grpc://")) return { ...base, backend: "remote", remote: { ...base.remote, target: spec.slice("grpc://".length) } };
  if ((ORACLE_BACKENDS as readonly string[]).includes(spec) && spec.startsWith("synthetic-")) {
    return { ...base, backend: spec as OracleConfig["backend"] };
  }
  if (!existsSync(spec)) throw new RpcError(Code.NOT_FOUND, `--oracle ${spec}: no such directory or file (nor a synthetic judge's name, nor grpc://HOST:PORT)`);
  if (statSync(spec).isDirectory()) {
    const kind = readModelDirConfig(spec).kind;
    return { ...base, backend: kind === "reward" ? "reward-onnx" : "pairwise-onnx", modelDir: spec };
  }
  return loadConfig({ file: spec }).oracle;
}

export interface CompareFlags {
  oracle?: string;
  prompt: string;
  candidate: string[];
  json?: boolean;
}

/** What `sppo compare` prints for `flags` (the matrix as JSON or as a table); warnings go to stderr. */
export async function compareOutput(flags: CompareFlags): Promise<string> {
  const oracle = await createOracle(resolveOracleConfig(flags.oracle));
  try {
    const { matrix, truncatedTexts } = await oracle.compare(flags.prompt, flags.candidate);
    if (truncatedTexts > 0) process.stderr.write(`sppo compare: ${truncatedTexts} text(s) were truncated to the model's token limits\n`);
    if (flags.json) return `${JSON.stringify({ matrix })}\n`;
    const { backend, model } = oracle.describe();
    const k = matrix.length;
    const lines = [`oracle: ${backend} (${model})`, `P[i][j] = P(candidate i ≻ candidate j)`];
    lines.push(`      ${Array.from({ length: k }, (_, j) => `[${j}]`.padStart(7)).join("")}   win rate`);
    for (const [i, row] of matrix.entries()) {
      const winRate = row.reduce((a, b) => a + b, 0) / k;
      lines.push(`[${i}]`.padEnd(6) + row.map((p) => p.toFixed(4).padStart(7)).join("") + `   ${winRate.toFixed(4)}   ${flags.candidate[i]}`);
    }
    return `${lines.join("\n")}\n`;
  } catch (err) {
    if (err instanceof RpcError) throw new RpcError(err.code, `compare: ${err.message}`, { cause: err, field: err.field });
    throw err;
  } finally {
    await oracle.close();
  }
}
