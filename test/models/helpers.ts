/** Shared helpers of the models tests: fixture paths and the backends every numerical test runs on. */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type BackendName, initBackend } from "../../models/index.js";

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "fixtures");

/** Every backend present: wasm and cpu always, native tensorflow where tfjs-node(-gpu) is installed and loads. */
export const BACKENDS: BackendName[] = (await initBackend("auto")).name === "tensorflow" ? ["tensorflow", "wasm", "cpu"] : ["wasm", "cpu"];

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
