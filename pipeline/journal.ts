/**
 * The scored-set journal of one iteration: every TrainingExample the loop sends the optimizer, one protobuf-JSON
 * line each, appended (a whole prompt's group in one write) before the examples are sent. With it the loop can
 *  - replay the iteration into an optimizer that restarted from an earlier checkpoint (the optimizer skips the
 *    examples it had already consumed), and
 *  - resume after the loop itself stopped (`sppo run --resume DIR`) without sampling or judging again the prompts
 *    already scored.
 * The file lives in the run's output directory: journal/iteration-<t>.jsonl.
 */
import { appendFileSync, existsSync, mkdirSync, openSync, readFileSync, closeSync, ftruncateSync } from "node:fs";
import { dirname, join } from "node:path";
import { fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { type TrainingExample, TrainingExampleSchema } from "../gen/sppo/v1/optimizer_pb.js";
import { log } from "../lib/log.js";
import { Code, RpcError } from "../lib/errors.js";

export interface Journal {
  /** Records one prompt's examples (its whole group). */
  append(examples: readonly TrainingExample[]): void;
  /** Every example recorded so far, in order. */
  replay(): Iterable<TrainingExample>;
  /** Prompt ids whose whole group is recorded. */
  readonly scoredPrompts: ReadonlySet<string>;
}

/** A journal in memory: replays for a broken optimizer stream within this process (runLoop without a directory). */
export function memoryJournal(): Journal {
  const examples: TrainingExample[] = [];
  const scoredPrompts = new Set<string>();
  return {
    append(group) {
      examples.push(...group);
      for (const ex of group) scoredPrompts.add(ex.promptId);
    },
    replay: () => examples,
    scoredPrompts,
  };
}

export function journalPath(outDir: string, iteration: number): string {
  return join(outDir, "journal", `iteration-${iteration}.jsonl`);
}

/**
 * Opens (creating it when absent) the journal file of `iteration` at `path`. What a stop left behind is repaired
 * first: a torn last line and a prompt whose group was not wholly written are cut off, so that the prompt is
 * sampled again. A damaged line elsewhere is an error naming the file and line.
 */
export function fileJournal(path: string, iteration: number): Journal {
  mkdirSync(dirname(path), { recursive: true });
  const scoredPrompts = new Set<string>();
  if (existsSync(path)) {
    const text = readFileSync(path, "utf8");
    let keep = 0; // bytes up to the end of the last whole group
    let offset = 0;
    const open = new Map<string, number>(); // prompt id → examples of its group seen
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const complete = i < lines.length - 1; // the text after the last "\n" is a torn line (or "")
      offset += Buffer.byteLength(line) + (complete ? 1 : 0);
      if (line.trim() === "") continue;
      if (!complete) break; // a torn last line (no line end): its write was cut short
      let ex: TrainingExample;
      try {
        ex = fromJsonString(TrainingExampleSchema, line);
      } catch (err) {
        throw new RpcError(Code.DATA_LOSS, `${path}:${i + 1}: not a TrainingExample (${(err as Error).message})`, { cause: err });
      }
      if (ex.iteration !== iteration) throw new RpcError(Code.DATA_LOSS, `${path}:${i + 1}: example of iteration ${ex.iteration} in the journal of iteration ${iteration}`);
      const seen = (open.get(ex.promptId) ?? 0) + 1;
      if (seen === ex.groupSize) {
        open.delete(ex.promptId);
        scoredPrompts.add(ex.promptId);
      } else open.set(ex.promptId, seen);
      if (open.size === 0) keep = offset;
    }
    const bytes = Buffer.byteLength(text);
    if (keep < bytes) {
      log.warn({ journal: path, keptBytes: keep, droppedBytes: bytes - keep }, "journal: cut a partly written prompt group left by a stop");
      const fd = openSync(path, "r+");
      try {
        ftruncateSync(fd, keep);
      } finally {
        closeSync(fd);
      }
    }
  }
  return {
    append(group) {
      appendFileSync(path, group.map((ex) => `${toJsonString(TrainingExampleSchema, ex)}\n`).join(""));
      for (const ex of group) scoredPrompts.add(ex.promptId);
    },
    *replay() {
      if (!existsSync(path)) return;
      const lines = readFileSync(path, "utf8").split("\n");
      for (let i = 0; i < lines.length; i++) {
        if (lines[i].trim() === "") continue;
        yield fromJsonString(TrainingExampleSchema, lines[i]);
      }
    },
    scoredPrompts,
  };
}
