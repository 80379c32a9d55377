/**
 * `npm run bench` — runs every benchmark row group in bench/ and prints one JSON object per line on stdout
 * (`metric`, `value`, `unit`, and `torch`/`ratio` where PyTorch measured the same work in the same run).
 *
 *   node --import tsx bench/run.ts [--only NAME[,NAME]] [--quick]
 *
 * A row group is any bench/*.ts file other than run.ts and row.ts whose default export is a function
 * `(options) => Promise<BenchRow[]>` (see row.ts); groups run one after another, in file-name order, so they do not
 * compete for the cores. A group that throws prints one row {metric: "<group>.error", ...} and the others still run.
 */
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type { BenchGroup, BenchRow } from "./row.js";

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({ options: { only: { type: "string" }, quick: { type: "boolean", default: false } } });
const only = values.only?.split(",").map((s) => s.trim());

const groups = readdirSync(here)
  .filter((f) => f.endsWith(".ts") && f !== "run.ts" && f !== "row.ts" && !f.endsWith(".d.ts"))
  .map((f) => f.slice(0, -3))
  .filter((name) => !only || only.includes(name))
  .sort();

let failed = false;
for (const name of groups) {
  let rows: BenchRow[];
  try {
    const mod = (await import(pathToFileURL(join(here, `${name}.ts`)).href)) as { default?: unknown };
    if (typeof mod.default !== "function") continue; // a helper module, not a row group
    rows = await (mod.default as BenchGroup)({ quick: values.quick });
  } catch (err) {
    failed = true;
    rows = [{ metric: `${name}.error`, value: 1, unit: "error", error: (err as Error).message }];
  }
  for (const row of rows) process.stdout.write(`${JSON.stringify(row)}\n`);
}
if (failed) process.exitCode = 1;
