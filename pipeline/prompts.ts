/**
 * Prompt sets: JSONL ({"prompt": "..."} per line), Parquet files, or a Hugging Face dataset directory of Parquet
 * files with a `prompt` column (UltraFeedback's layout), split across iterations as the paper does (disjoint
 * splits, one per iteration) with a held-out evaluation set.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { extname, join, relative } from "node:path";
import { asyncBufferFromFile, parquetReadObjects } from "hyparquet";
import { createRng } from "../lib/rng.js";
import { kindError } from "../lib/errors.js";

export interface Prompt {
  /** Stable id: "<file>:<row>" (1-based row). */
  id: string;
  prompt: string;
}

function checkText(text: unknown, where: string): string {
  if (typeof text !== "string") throw kindError("prompt-data", `${where}: "prompt" must be a string, got ${text === null ? "null" : typeof text}`);
  if (text.trim().length === 0) throw kindError("prompt-data", `${where}: "prompt" is empty`);
  if (text.includes("\uFFFD")) throw kindError("prompt-data", `${where}: the prompt is not valid UTF-8 (it decodes with replacement characters)`);
  return text;
}

function readJsonl(path: string): Prompt[] {
  const bytes = readFileSync(path);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    // Find the first bad line for the message.
    const lines = bytes.toString("latin1").split("\n");
    const bad = lines.findIndex((_line, i) => {
      try {
        new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(offsetOfLine(lines, i), offsetOfLine(lines, i + 1)));
        return false;
      } catch {
        return true;
      }
    });
    throw kindError("prompt-data", `${path}:${bad + 1}: not valid UTF-8`);
  }
  const prompts: Prompt[] = [];
  text.split("\n").forEach((line, index) => {
    if (line.trim() === "") return;
    const where = `${path}:${index + 1}`;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (err) {
      throw kindError("prompt-data", `${where}: not valid JSON: ${(err as Error).message}`);
    }
    if (typeof row !== "object" || row === null || !("prompt" in row)) throw kindError("prompt-data", `${where}: expected an object with a "prompt" field`);
    prompts.push({ id: `${path}:${index + 1}`, prompt: checkText((row as { prompt: unknown }).prompt, where) });
  });
  return prompts;
}

function offsetOfLine(lines: string[], index: number): number {
  let offset = 0;
  for (let i = 0; i < index && i < lines.length; i++) offset += lines[i].length + 1;
  return offset;
}

async function readParquet(path: string, name = path): Promise<Prompt[]> {
  const file = await asyncBufferFromFile(path);
  let rows: Record<string, unknown>[];
  try {
    rows = (await parquetReadObjects({ file, columns: ["prompt"] })) as Record<string, unknown>[];
  } catch (err) {
    throw kindError("prompt-data", `${name}: cannot read the "prompt" column of this Parquet file: ${(err as Error).message}`);
  }
  return rows.map((row, i) => ({ id: `${name}:${i + 1}`, prompt: checkText(row.prompt, `${name}: row ${i + 1}`) }));
}

function parquetFilesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((entry) => {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) return parquetFilesUnder(path);
      return extname(entry.name) === ".parquet" ? [path] : [];
    })
    .sort();
}

/** Reads a prompt set; throws a "prompt-data" RpcError naming the file and line for bad data, and for an empty set. */
export async function loadPrompts(path: string): Promise<Prompt[]> {
  let stat: ReturnType<typeof statSync>;
  try {
    stat = statSync(path);
  } catch {
    throw kindError("prompt-data", `${path}: no such prompt file or dataset directory`);
  }
  let prompts: Prompt[];
  if (stat.isDirectory()) {
    // A Hugging Face dataset directory: the training split's Parquet files (train*/ or data/train-*), else all.
    const all = parquetFilesUnder(path);
    const train = all.filter((f) => /(^|\/)train[^/]*\.parquet$|(^|\/)train[^/]*\//.test(relative(path, f)));
    const files = train.length > 0 ? train : all;
    if (files.length === 0) throw kindError("prompt-data", `${path}: a dataset directory with no .parquet files`);
    prompts = [];
    for (const file of files) prompts.push(...(await readParquet(file, relative(path, file))));
  } else if (extname(path) === ".parquet") {
    prompts = await readParquet(path);
  } else {
    prompts = readJsonl(path);
  }
  if (prompts.length === 0) throw kindError("prompt-data", `${path}: the prompt set is empty`);
  return prompts;
}

export interface PromptSplits {
  /** One disjoint split per iteration. */
  iterations: Prompt[][];
  /** Held-out prompts for evaluation. */
  evaluation: Prompt[];
}

/**
 * Shuffles with `seed`, holds out `evalCount` prompts, and gives each iteration its own disjoint split of
 * `perIteration` prompts (0 = all training prompts divided evenly).
 */
export function splitPrompts(prompts: readonly Prompt[], options: { iterations: number; perIteration: number; evalCount: number; seed: number }): PromptSplits {
  const { iterations, perIteration, evalCount, seed } = options;
  const order = [...prompts];
  const rng = createRng(seed);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  if (order.length <= evalCount) throw kindError("prompt-data", `the prompt set has ${order.length} prompts: not enough for ${evalCount} held-out evaluation prompts and training`);
  const evaluation = order.slice(0, evalCount);
  const training = order.slice(evalCount);
  const size = perIteration > 0 ? perIteration : Math.floor(training.length / iterations);
  if (size < 1 || size * iterations > training.length) {
    throw kindError("prompt-data", `${training.length} training prompts cannot make ${iterations} disjoint splits of ${perIteration > 0 ? perIteration : "≥ 1"} prompts`);
  }
  return { iterations: Array.from({ length: iterations }, (_, t) => training.slice(t * size, (t + 1) * size)), evaluation };
}
