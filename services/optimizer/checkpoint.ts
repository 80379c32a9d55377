/**
 * Checkpoints of the optimizer: everything a resumed run needs to continue exactly where the stopped one was.
 *
 * Layout of `<checkpointDir>/<name>/` (name `ckpt-i<iteration>-s<step>`, zero-padded so names sort in time order):
 *   model/                    the weights in the real model format (config.json, model.safetensors, tokenizer files)
 *   optimizer.safetensors     the optimizer's per-parameter slots, tensor `<param>::<slot>` (absent between iterations)
 *   trainer.json              trainer state: iteration, step, data cursor and buffered examples, RNG state, versions,
 *                             optimizer kind/step/hyper-parameters
 *   manifest.json             every file above with its size and SHA-256
 *   manifest.sha256           SHA-256 of manifest.json (the Checkpoint.sha256 the service reports)
 * The directory is written atomically (files.ts `writeDirAtomic`), and `readCheckpoint` verifies every hash before
 * anything is used: a damaged checkpoint fails with the file named and is skipped in favour of an older one.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { CausalLM, OptimizerState, PolicyTokenizer, RawTensor } from "../../models/index.js";
import { readSafetensors, saveModel, writeSafetensors } from "../../models/index.js";
import { type ManifestFile, manifestOf, sha256Bytes, sha256File, writeDirAtomic } from "./files.js";

/** A checkpoint that is missing, unreadable or does not match its manifest. */
export class CheckpointError extends Error {
  override name = "CheckpointError";
}

/** What a checkpoint holds besides the weights; `trainer` is the trainer's own JSON-safe state. */
export interface CheckpointPayload<T> {
  model: CausalLM;
  tokenizer?: PolicyTokenizer;
  /** The optimizer's state, when an iteration is open. */
  optimizer?: OptimizerState;
  trainer: T;
}

/** A checkpoint on disk, as listed. */
export interface CheckpointEntry {
  name: string;
  dir: string;
  iteration: number;
  step: number;
  /** Hex SHA-256 of manifest.json. */
  sha256: string;
}

const NAME = /^ckpt-i(\d+)-s(\d+)$/;

export function checkpointName(iteration: number, step: number): string {
  return `ckpt-i${String(iteration).padStart(6, "0")}-s${String(step).padStart(10, "0")}`;
}

/** Writes a checkpoint atomically under `root` and returns its entry. */
export function writeCheckpoint<T>(root: string, iteration: number, step: number, payload: CheckpointPayload<T>): CheckpointEntry {
  const name = checkpointName(iteration, step);
  const dir = join(root, name);
  let sha256 = "";
  writeDirAtomic(dir, (tmp) => {
    saveModel(join(tmp, "model"), payload.model, payload.tokenizer);
    let optimizerMeta: Omit<OptimizerState, "slots"> | null = null;
    if (payload.optimizer) {
      const { slots, ...meta } = payload.optimizer;
      optimizerMeta = meta;
      const tensors = new Map<string, RawTensor>();
      for (const [param, bySlot] of Object.entries(slots)) {
        for (const [slot, { shape, data }] of Object.entries(bySlot)) tensors.set(`${param}::${slot}`, { shape, data: Float32Array.from(data) });
      }
      writeSafetensors(join(tmp, "optimizer.safetensors"), tensors, { format: "sppo-optimizer" });
    }
    writeFileSync(join(tmp, "trainer.json"), `${JSON.stringify({ format: 1, iteration, step, optimizer: optimizerMeta, trainer: payload.trainer })}\n`);
    const manifest = manifestOf(tmp);
    const manifestText = `${JSON.stringify({ files: manifest }, null, 1)}\n`;
    writeFileSync(join(tmp, "manifest.json"), manifestText);
    sha256 = sha256Bytes(manifestText);
    writeFileSync(join(tmp, "manifest.sha256"), `${sha256}\n`);
  });
  return { name, dir, iteration, step, sha256 };
}

/** Checks every file of the checkpoint in `dir` against its manifest; returns the manifest hash. Throws CheckpointError. */
export function verifyCheckpoint(dir: string): string {
  const manifestPath = join(dir, "manifest.json");
  if (!existsSync(manifestPath)) throw new CheckpointError(`${dir}: manifest.json is missing`);
  const manifestText = readFileSync(manifestPath, "utf8");
  const sha = sha256Bytes(manifestText);
  const recorded = existsSync(join(dir, "manifest.sha256")) ? readFileSync(join(dir, "manifest.sha256"), "utf8").trim() : "";
  if (sha !== recorded) throw new CheckpointError(`${manifestPath}: SHA-256 ${sha} does not match manifest.sha256 (${recorded || "missing"})`);
  let files: ManifestFile[];
  try {
    files = (JSON.parse(manifestText) as { files: ManifestFile[] }).files;
  } catch (err) {
    throw new CheckpointError(`${manifestPath}: not valid JSON (${(err as Error).message})`);
  }
  for (const f of files) {
    const path = join(dir, f.name);
    if (!existsSync(path)) throw new CheckpointError(`${path}: listed in the manifest but missing`);
    const actual = sha256File(path);
    if (actual !== f.sha256) throw new CheckpointError(`${path}: SHA-256 ${actual} does not match the manifest's ${f.sha256}`);
  }
  const listed = new Set(files.map((f) => f.name));
  for (const f of manifestOf(dir, ["manifest.json", "manifest.sha256"])) {
    if (!listed.has(f.name)) throw new CheckpointError(`${join(dir, f.name)}: not listed in the manifest`);
  }
  return sha;
}

/** A verified checkpoint's contents; the weights are loaded by the caller from `modelDir` (models/ `loadModel`). */
export interface LoadedCheckpoint<T> {
  entry: CheckpointEntry;
  modelDir: string;
  optimizer?: OptimizerState;
  trainer: T;
}

/** Verifies and reads the checkpoint in `dir`. */
export function readCheckpoint<T>(dir: string): LoadedCheckpoint<T> {
  const sha256 = verifyCheckpoint(dir);
  const doc = JSON.parse(readFileSync(join(dir, "trainer.json"), "utf8")) as {
    format: number;
    iteration: number;
    step: number;
    optimizer: Omit<OptimizerState, "slots"> | null;
    trainer: T;
  };
  if (doc.format !== 1) throw new CheckpointError(`${join(dir, "trainer.json")}: unknown format ${doc.format}`);
  let optimizer: OptimizerState | undefined;
  if (doc.optimizer) {
    const slots: OptimizerState["slots"] = {};
    for (const [key, t] of readSafetensors(join(dir, "optimizer.safetensors"))) {
      const cut = key.lastIndexOf("::");
      if (cut < 0) throw new CheckpointError(`${join(dir, "optimizer.safetensors")}: tensor ${key} is not <param>::<slot>`);
      const param = key.slice(0, cut);
      slots[param] ??= {};
      slots[param][key.slice(cut + 2)] = { shape: t.shape, data: Array.from(t.data) };
    }
    optimizer = { ...doc.optimizer, slots };
  }
  const name = dir.split(/[\\/]/).filter(Boolean).at(-1) ?? dir;
  return {
    entry: { name, dir, iteration: doc.iteration, step: doc.step, sha256 },
    modelDir: join(dir, "model"),
    optimizer,
    trainer: doc.trainer,
  };
}

/** Checkpoints under `root`, newest first (by name, i.e. by iteration then step). Hashes come from manifest.sha256. */
export function listCheckpoints(root: string): CheckpointEntry[] {
  if (!existsSync(root)) return [];
  const out: CheckpointEntry[] = [];
  for (const entry of readdirSync(root, { withFileTypes: true })) {
    const m = NAME.exec(entry.name);
    if (!entry.isDirectory() || !m) continue;
    const dir = join(root, entry.name);
    const shaPath = join(dir, "manifest.sha256");
    out.push({
      name: entry.name,
      dir,
      iteration: Number(m[1]),
      step: Number(m[2]),
      sha256: existsSync(shaPath) ? readFileSync(shaPath, "utf8").trim() : "",
    });
  }
  return out.sort((a, b) => (a.name < b.name ? 1 : a.name > b.name ? -1 : 0));
}
