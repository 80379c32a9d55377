/** Shared helpers of the models tests: fixture paths and the backends every numerical test runs on. */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type BackendName, initBackend } from "../../models/index.js";

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "fixtures");

/** Every backend present: wasm and cpu always, native tensorflow where tfjs-node(-gpu) is installed and loads. */
export const BACKENDS: BackendName[] = (await initBackend("auto")).name === "tensorflow" ? ["tensorflow", "wasm", "cpu"] : ["wasm", "cpu"];

/**
 * Per-row seeds of a batch that holds one request (seed 42, K = 3: streams 0, 1, 2 at rows 1, 2 and 4) between rows
 * of other requests (seed 5, and seed 2^40 + 9).
 */
export const MIXED_ROWS: readonly { seed: number; stream: number }[] = [
  { seed: 5, stream: 0 },
  { seed: 42, stream: 0 },
  { seed: 42, stream: 1 },
  { seed: 5, stream: 1 },
  { seed: 42, stream: 2 },
  { seed: 2 ** 40 + 9, stream: 0 },
];

export interface Expected {
  ids: number[][];
  shape: [number, number, number];
  logits: number[];
}

export function readExpected(name: string): Expected {
  return JSON.parse(readFileSync(join(FIXTURES, name, "expected.json"), "utf8"));
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
