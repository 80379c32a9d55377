/**
 * The weight files of a model directory, in the Hugging Face layout: one `model.safetensors`, or shards
 * `model-00001-of-0000N.safetensors` listed by `model.safetensors.index.json`
 * (`{"metadata": {"total_size": bytes}, "weight_map": {tensor: shard file}}`, what `save_pretrained` writes and
 * `from_pretrained` reads). Reading is lazy: `CheckpointFiles` holds the headers and reads a tensor when asked, so a
 * loader can build its copy of each weight and drop the read one before reading the next.
 *
 * Pickle-based weights (pytorch_model.bin, *.pt, *.pth, *.ckpt, *.pkl) are never loaded, even as a fallback:
 * unpickling runs whatever code the file names, so one downloaded checkpoint could run anything with this process's
 * rights. They are only named in the error, with how to convert them. Beside safetensors weights they are ignored.
 */
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../lib/atomic.js";
import { kindError, RpcError } from "../lib/errors.js";
import { confinedPath } from "../lib/paths.js";
import type { FloatStorage } from "./dtype.js";
import { type RawTensor, SafetensorsFile, type TensorEntry, type WritableTensor, writeSafetensors } from "./safetensors.js";

/** File names of the layout. */
export const WEIGHTS_FILE = "model.safetensors";
export const WEIGHTS_INDEX = "model.safetensors.index.json";
/** A shard's name, as transformers writes it: `model-00001-of-00003.safetensors`. */
export const SHARD_FILE = /^model-(\d{5})-of-(\d{5})\.safetensors$/;
/** transformers' default `max_shard_size` ("5GB", decimal). */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

/** Files that Python unpickles to load: PyTorch's `torch.save` format (a zip of pickles) and plain pickles. */
const PICKLE_FILE = /^pytorch_model.*\.bin$|\.(pt|pth|ckpt|pkl|pickle)$/;

/** A tensor entry and the file it is in. */
export interface CheckpointEntry extends TensorEntry {
  /** Absolute path of the safetensors file holding it. */
  file: string;
}

/**
 * The path of the directory's weights — `model.safetensors`, else `model.safetensors.index.json` — or a
 * RpcError of kind "model-format" saying what is there instead (pickle files named with how to convert them, or nothing).
 */
export function modelWeightsPath(dir: string): string {
  const single = join(dir, WEIGHTS_FILE);
  if (existsSync(single)) return single;
  const index = join(dir, WEIGHTS_INDEX);
  if (existsSync(index)) return index;
  let names: string[] = [];
  try {
    names = readdirSync(dir).sort();
  } catch {
    // An unreadable directory: the plain "missing" message below says enough.
  }
  const pickles = names.filter((n) => PICKLE_FILE.test(n));
  if (pickles.length > 0) {
    throw kindError("model-format", 
      `${single}: missing; the directory has ${pickles.join(", ")}, which ${pickles.length === 1 ? "is a pickle-based file" : "are pickle-based files"}. ` +
        "Pickle files can execute arbitrary code when loaded, so they are never loaded. Convert the weights to safetensors " +
        "(in Python, where you trust the file: AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)) " +
        "and keep the model.safetensors it writes (or its shards and model.safetensors.index.json).",
    );
  }
  throw kindError("model-format", `${single}: missing; a model directory needs its weights as model.safetensors (or shards listed by ${WEIGHTS_INDEX}) beside config.json`);
}

/** The shard files an index names, each confined to `dir`, and which tensor is where. */
function readIndex(path: string, dir: string): Map<string, string> {
  let index: { weight_map?: unknown };
  try {
    index = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw kindError("model-format", `${path}: cannot read it as JSON (${(err as Error).message})`);
  }
  const map = index?.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) throw kindError("model-format", `${path}: weight_map is missing or not an object of tensor → file`);
  const out = new Map<string, string>();
  for (const [tensor, file] of Object.entries(map)) {
    if (typeof file !== "string") throw kindError("model-format", `${path}: weight_map.${tensor} is not a file name`);
    try {
      out.set(tensor, confinedPath(dir, file, `${path}: weight_map.${tensor}`));
    } catch (err) {
      if (RpcError.is(err, "unsafe-path")) throw kindError("model-format", err.message, { cause: err });
      throw err;
    }
  }
  if (out.size === 0) throw kindError("model-format", `${path}: weight_map lists no tensors`);
  return out;
}

/**
 * A model directory's weights, single-file or sharded, opened lazily: headers now, tensors on `get`. It reads like a
 * Map of tensors (`keys`, `has`, `get`), so loaders take it or a Map alike; each `get` reads the tensor afresh.
 */
export class CheckpointFiles {
  private constructor(
    /** What was opened: model.safetensors or model.safetensors.index.json (for messages). */
    readonly path: string,
    private readonly files: Map<string, SafetensorsFile>,
    /** Every tensor, by name, with its file and byte range. */
    readonly entries: ReadonlyMap<string, CheckpointEntry>,
  ) {}

  /**
   * Opens the weights of model directory `dir` (see `modelWeightsPath`); RpcError of kind "model-format" naming what is wrong.
   * `options.chunkBytes` caps each read call (SafetensorsFile.open).
   */
  static open(dir: string, options: { chunkBytes?: number } = {}): CheckpointFiles {
    const path = modelWeightsPath(dir);
    const files = new Map<string, SafetensorsFile>();
    const entries = new Map<string, CheckpointEntry>();
    try {
      if (path.endsWith(WEIGHTS_FILE)) {
        const f = SafetensorsFile.open(path, options);
        files.set(path, f);
        for (const [name, e] of f.entries) entries.set(name, { ...e, file: path });
      } else {
        for (const [tensor, file] of readIndex(path, dir)) {
          let f = files.get(file);
          if (!f) {
            f = SafetensorsFile.open(file, options);
            files.set(file, f);
          }
          const e = f.entries.get(tensor);
          if (!e) throw kindError("model-format", `${path}: tensor ${tensor} is listed in ${file}, which does not hold it`);
          entries.set(tensor, { ...e, file });
        }
      }
    } catch (err) {
      for (const f of files.values()) f.close();
      throw err;
    }
    return new CheckpointFiles(path, files, entries);
  }

  /** The safetensors files, in the order they were opened. */
  get filePaths(): string[] {
    return [...this.files.keys()];
  }

  /** Whether every float tensor among `names` is stored as `dtype` ("F32", "BF16", ...). */
  allStoredAs(dtype: string, names: Iterable<string>): boolean {
    for (const n of names) if (this.entries.get(n)?.dtype !== dtype) return false;
    return true;
  }

  keys(): IterableIterator<string> {
    return this.entries.keys();
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** Reads tensor `name` from its file (undefined when the checkpoint has none of that name). */
  get(name: string): RawTensor | undefined {
    const e = this.entries.get(name);
    return e ? this.files.get(e.file)!.read(name) : undefined;
  }

  close(): void {
    for (const f of this.files.values()) f.close();
  }
}

/** How a model's weights are written. */
export interface CheckpointWriteOptions {
  /** Float storage: "float32" or "bfloat16". @default "float32" */
  dtype?: FloatStorage;
  /** Start a new shard before a file's tensor bytes would pass this; one file when everything fits. @default 5e9 */
  maxShardBytes?: number;
}

/** What `writeCheckpointFiles` wrote. */
export interface CheckpointWritten {
  /** File names written, relative to the directory (index last when sharded). */
  files: string[];
  /** Bytes of tensor data (the index's `total_size`). */
  totalBytes: number;
}

/**
 * Writes `tensors` into `dir` as `model.safetensors`, or — when they pass `maxShardBytes` — as shards plus
 * `model.safetensors.index.json`, in the order given (a tensor bigger than the limit gets a shard of its own).
 * Weight files of the other layout left in `dir` are removed, so the directory loads as written.
 */
export function writeCheckpointFiles(dir: string, tensors: ReadonlyMap<string, WritableTensor>, options: CheckpointWriteOptions = {}): CheckpointWritten {
  const storage = options.dtype ?? "float32";
  const maxShardBytes = options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(maxShardBytes > 0)) throw new RangeError(`maxShardBytes must be > 0, got ${maxShardBytes}`);
  const bytesOf = (t: WritableTensor) => {
    const int = "read" in t ? t.int === true : t.data instanceof Int32Array;
    return t.shape.reduce((p, d) => p * d, 1) * (!int && storage === "bfloat16" ? 2 : 4);
  };
  const shards: string[][] = [[]];
  let current = 0;
  for (const [name, t] of tensors) {
    const b = bytesOf(t);
    if (current > 0 && current + b > maxShardBytes) {
      shards.push([]);
      current = 0;
    }
    shards.at(-1)!.push(name);
    current += b;
  }
  const stale = readdirSync(dir).filter((n) => n === WEIGHTS_FILE || n === WEIGHTS_INDEX || SHARD_FILE.test(n));
  const metadata = { format: "pt" };
  if (shards.length === 1) {
    const totalBytes = writeSafetensors(join(dir, WEIGHTS_FILE), tensors, metadata, { dtype: storage });
    for (const n of stale) if (n !== WEIGHTS_FILE) rmSync(join(dir, n), { force: true });
    return { files: [WEIGHTS_FILE], totalBytes };
  }
  const pad = (i: number) => String(i).padStart(5, "0");
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  let totalBytes = 0;
  shards.forEach((names, i) => {
    const file = `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
    totalBytes += writeSafetensors(join(dir, file), new Map(names.map((n) => [n, tensors.get(n)!])), metadata, { dtype: storage });
    for (const n of names) weightMap[n] = file;
    files.push(file);
  });
  const sorted = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  writeFileAtomic(join(dir, WEIGHTS_INDEX), `${JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: sorted }, null, 2)}\n`);
  for (const n of stale) if (n !== WEIGHTS_INDEX && !files.includes(n)) rmSync(join(dir, n), { force: true });
  return { files: [...files, WEIGHTS_INDEX], totalBytes };
}
