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
 * The directory is written atomically (lib/atomic.ts `writeDirAtomic`), and `readCheckpoint` verifies every hash before
 * anything is used: a damaged checkpoint fails with the file named and is skipped in favour of an older one. Every
 * name manifest.json lists, and every file read, must stay inside the checkpoint's directory (lib/paths.ts; symbolic
 * links leading out included): a manifest naming `../x` is damaged too, so nothing outside is ever hashed or loaded.
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeDirAtomic } from "../../lib/atomic.js";
import { log } from "../../lib/log.js";
import { confinedPath } from "../../lib/paths.js";
import { directoryManifestSync, manifestNames, sha256Bytes, sha256OfFileSync, type WeightFile } from "../../lib/weights/manifest.js";
import type { CausalLM, OptimizerState, PolicyTokenizer, RawTensor } from "../../models/index.js";
import { readSafetensors, saveModel, writeSafetensors } from "../../models/index.js";
import { kindError, RpcError } from "../../lib/errors.js";

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
    const manifest = directoryManifestSync(tmp, [], false).files;
    const manifestText = `${JSON.stringify({ files: manifest }, null, 1)}\n`;
    writeFileSync(join(tmp, "manifest.json"), manifestText);
    sha256 = sha256Bytes(manifestText);
    writeFileSync(join(tmp, "manifest.sha256"), `${sha256}\n`);
  });
  return { name, dir, iteration, step, sha256 };
}

/** `name` under the checkpoint directory `dir`, or a "checkpoint" error when it leads outside (see lib/paths.ts). */
function inside(dir: string, name: string, what: string): string {
  try {
    return confinedPath(dir, name, what);
  } catch (err) {
    if (RpcError.is(err, "unsafe-path")) throw kindError("checkpoint", err.message, { cause: err });
    throw err;
  }
}

function isManifestFile(f: unknown): f is WeightFile {
  return typeof f === "object" && f !== null && typeof (f as WeightFile).name === "string" && typeof (f as WeightFile).sha256 === "string";
}

/**
 * Checks every file of the checkpoint in `dir` against its manifest; returns the manifest hash. Throws a "checkpoint" RpcError,
 * also for a manifest that is not a list of files or that names a file outside `dir`.
 */
export function verifyCheckpoint(dir: string): string {
  const manifestPath = inside(dir, "manifest.json", "checkpoint file");
  if (!existsSync(manifestPath)) throw kindError("checkpoint", `${dir}: manifest.json is missing`);
  const manifestText = readFileSync(manifestPath, "utf8");
  const sha = sha256Bytes(manifestText);
  const shaPath = inside(dir, "manifest.sha256", "checkpoint file");
  const recorded = existsSync(shaPath) ? readFileSync(shaPath, "utf8").trim() : "";
  if (sha !== recorded) throw kindError("checkpoint", `${manifestPath}: SHA-256 ${sha} does not match manifest.sha256 (${recorded || "missing"})`);
  let listing: unknown;
  try {
    listing = (JSON.parse(manifestText) as { files?: unknown } | null)?.files;
  } catch (err) {
    throw kindError("checkpoint", `${manifestPath}: not valid JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(listing)) throw kindError("checkpoint", `${manifestPath}: field files is not a list`);
  const files = listing.map((f: unknown, i): WeightFile => {
    if (!isManifestFile(f)) throw kindError("checkpoint", `${manifestPath}: files[${i}] is not a {name, sha256} entry`);
    return f;
  });
  // Every name is confined before any file is touched: a manifest pointing outside hashes nothing there.
  const paths = files.map((f, i) => inside(dir, f.name, `${manifestPath}: files[${i}].name`));
  for (const [i, f] of files.entries()) {
    const path = paths[i];
    if (!existsSync(path)) throw kindError("checkpoint", `${path}: listed in the manifest but missing`);
    const actual = sha256OfFileSync(path);
    if (actual !== f.sha256) throw kindError("checkpoint", `${path}: SHA-256 ${actual} does not match the manifest's ${f.sha256}`);
  }
  const listed = new Set(files.map((f) => f.name));
  for (const name of manifestNames(dir, ["manifest.json", "manifest.sha256"])) {
    if (!listed.has(name)) throw kindError("checkpoint", `${join(dir, name)}: not listed in the manifest`);
  }
  // A manifest skips symbolic links; writeCheckpoint never makes one, so any link here (e.g. model/tokenizer.json
  // pointing elsewhere, which loadModel would read) was put in afterwards.
  const link = findLink(dir);
  if (link) throw kindError("checkpoint", `${link}: a symbolic link (a checkpoint holds only the files it was written with)`);
  return sha;
}

/** The first symbolic link under `dir` (recursively), or undefined. */
function findLink(dir: string): string | undefined {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isSymbolicLink()) return path;
    if (entry.isDirectory()) {
      const found = findLink(path);
      if (found) return found;
    }
  }
  return undefined;
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
  const trainerPath = inside(dir, "trainer.json", "checkpoint file");
  let doc: {
    format: number;
    iteration: number;
    step: number;
    optimizer: Omit<OptimizerState, "slots"> | null;
    trainer: T;
  };
  try {
    doc = JSON.parse(readFileSync(trainerPath, "utf8"));
  } catch (err) {
    throw kindError("checkpoint", `${trainerPath}: cannot read it (${(err as Error).message})`);
  }
  if (doc?.format !== 1) throw kindError("checkpoint", `${trainerPath}: unknown format ${doc?.format}`);
  let optimizer: OptimizerState | undefined;
  if (doc.optimizer) {
    const slots: OptimizerState["slots"] = {};
    const optimizerPath = inside(dir, "optimizer.safetensors", "checkpoint file");
    for (const [key, t] of readSafetensors(optimizerPath)) {
      const cut = key.lastIndexOf("::");
      if (cut < 0) throw kindError("checkpoint", `${optimizerPath}: tensor ${key} is not <param>::<slot>`);
      const param = key.slice(0, cut);
      slots[param] ??= {};
      slots[param][key.slice(cut + 2)] = { shape: t.shape, data: Array.from(t.data) };
    }
    optimizer = { ...doc.optimizer, slots };
  }
  const name = dir.split(/[\\/]/).filter(Boolean).at(-1) ?? dir;
  return {
    entry: { name, dir, iteration: doc.iteration, step: doc.step, sha256 },
    modelDir: inside(dir, "model", "checkpoint directory"),
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

/**
 * The newest checkpoint under `root` that verifies, reads and that `accept` takes (may throw to refuse); damaged
 * ones are skipped with a warning.
 */
export function newestValidCheckpoint<T>(root: string, accept: (loaded: LoadedCheckpoint<T>) => boolean = () => true): LoadedCheckpoint<T> | undefined {
  for (const entry of listCheckpoints(root)) {
    let loaded: LoadedCheckpoint<T>;
    try {
      loaded = readCheckpoint<T>(entry.dir);
    } catch (err) {
      if (!(RpcError.is(err, "checkpoint"))) throw err;
      log.warn({ checkpoint: entry.dir, err: err.message }, "skipping a damaged checkpoint");
      continue;
    }
    if (accept(loaded)) return loaded;
  }
  return undefined;
}

/** Removes the checkpoints under `root` beyond the newest `keep`. */
export function pruneCheckpoints(root: string, keep: number): void {
  for (const old of listCheckpoints(root).slice(keep)) rmSync(old.dir, { recursive: true, force: true });
}
