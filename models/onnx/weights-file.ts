/**
 * Where a policy graph's weights live: ONNX's external-data convention (https://onnx.ai/onnx/repo-docs/ExternalData.html)
 * — each initializer names a file, a byte offset and a length — so graphs of any size stay small protobufs and
 * onnxruntime maps the weights from disk instead of parsing them out of a message (no 2 GiB limit, no copy in the
 * graph bytes, one copy shared by every session over the same file).
 *
 * Two layouts:
 *  - the checkpoint itself: a model directory whose parameters are all stored F32 is referenced in place (its
 *    model.safetensors or shards; a safetensors tensor is raw little-endian row-major data, which is exactly ONNX's
 *    raw_data), so a session over it costs no conversion and no extra file;
 *  - a weights file written for the purpose (`weights.bin`, tensors at 64-byte aligned offsets): for BF16/F16
 *    checkpoints (converted to float32), for float16 inference weights, and for weights held in memory (a tfjs
 *    model, the optimizer's tensors). It goes into a private temporary folder (under the OS's temporary folder
 *    unless the caller names one, see `defaultWeightsParent`) that `release()` removes.
 */
import { closeSync, mkdtempSync, openSync, readdirSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { create } from "@bufbuild/protobuf";
import { type TensorProto, TensorProto_DataLocation, TensorProto_DataType, TensorProtoSchema } from "onnx-buf";
import type { CheckpointFiles } from "../checkpoint-files.js";
import type { ModelConfig } from "../config.js";
import { narrow } from "../dtype.js";
import { paramShapes, type TensorLookup } from "../io.js";
import type { RawTensor } from "../safetensors.js";

/** Float format of a graph's weight matrices: float32, or float16 (half the bytes; products run in float16). */
export type OnnxWeightDtype = "float32" | "float16";

/** One initializer's bytes: file (relative to the folder), offset, length and element type. */
export interface ExternalTensor {
  location: string;
  offset: number;
  length: number;
  dataType: TensorProto_DataType;
  dims: number[];
}

/** A policy's weights as external data: the folder the locations are relative to, and where each weight is. */
export interface ExternalWeights {
  /** Absolute folder; onnxruntime's `session.model_external_initializers_file_folder_path`. */
  folder: string;
  tensors: ReadonlyMap<string, ExternalTensor>;
  /** Bytes of weight data the sessions map. */
  bytes: number;
  /** Whether `folder` is a temporary folder of ours (removed by `release`) or the checkpoint's own directory. */
  owned: boolean;
  /** Removes the written weights file (idempotent); sessions already created keep their mapping. */
  release(): void;
}

/**
 * Where weights files go when the caller names no folder: the OS's temporary folder, not memory-backed /dev/shm
 * although a tmpfs write is faster (3.4 s against 9.2 s for a 135M BF16 checkpoint's sessions here). A tmpfs file's
 * pages are memory that cannot be reclaimed, are charged to a container's memory limit, and are in a process's RSS
 * only where it maps and touches them: a prepacking sampling session keeps its own copy and leaves most of the file
 * unmapped, so peak RSS would leave out up to a whole copy of the weights (measured: 108 of 538 MB counted). On a
 * disk-backed folder the same pages are reclaimable page cache. engine.onnx.weightsDir names another folder.
 */
export function defaultWeightsParent(): string {
  return tmpdir();
}

/** Alignment of tensors in a written weights file (onnxruntime maps files; aligned rows help its kernels). */
const ALIGN = 64;
/** Values converted per write when narrowing to float16. */
const CHUNK_VALUES = 1 << 24;

/** Whether weight `name` of shape `dims` is stored in float16 under `dtype`: matrices only, vectors stay float32. */
export function isHalfWeight(dims: readonly number[], dtype: OnnxWeightDtype): boolean {
  return dtype === "float16" && dims.length === 2;
}

/**
 * The checkpoint's own files as external data, when every parameter is stored F32 and `dtype` is float32; else
 * undefined (the weights must be converted into a file of their own). `files` stays open with the caller.
 */
export function checkpointExternalWeights(config: ModelConfig, files: CheckpointFiles, dtype: OnnxWeightDtype): ExternalWeights | undefined {
  if (dtype !== "float32") return undefined;
  const tensors = new Map<string, ExternalTensor>();
  const folder = dirname(files.path);
  let bytes = 0;
  for (const [name, shape] of paramShapes(config)) {
    const short = name.startsWith("transformer.") ? name.slice("transformer.".length) : undefined;
    const e = files.entries.get(name) ?? (short ? files.entries.get(short) : undefined);
    if (e?.dtype !== "F32" || e.shape.join() !== shape.join()) return undefined; // the slow path names what is wrong
    tensors.set(name, { location: relative(folder, e.file), offset: e.byteOffset, length: e.byteLength, dataType: TensorProto_DataType.FLOAT, dims: shape });
    bytes += e.byteLength;
  }
  return { folder, tensors, bytes, owned: false, release() {} };
}

/**
 * Writes the parameters of `config` from `weights` (a Map, a lazy CheckpointFiles, or tfjs variables read one by
 * one), matrices as float16 when `dtype` says so: into `weights.bin` in a new temporary folder under `parent`
 * (released with the sessions), or into the file `into` names (an export's `model.onnx.data`; never removed). Each
 * tensor is read, written and dropped before the next. Throws TypeError naming a missing or misshapen weight.
 */
export function writeExternalWeights(
  config: ModelConfig,
  weights: TensorLookup,
  dtype: OnnxWeightDtype,
  parent?: string,
  into?: { folder: string; name: string },
): ExternalWeights {
  let folder = into?.folder;
  if (!folder) {
    const base = parent || defaultWeightsParent();
    removeOrphans(base);
    folder = mkdtempSync(join(base, `sppo-onnx-${process.pid}-`));
  }
  const file = into?.name ?? "weights.bin";
  const tensors = new Map<string, ExternalTensor>();
  let released = into !== undefined;
  const release = () => {
    if (!released) rmSync(folder, { recursive: true, force: true });
    released = true;
  };
  const fd = openSync(join(folder, file), "w");
  let offset = 0;
  try {
    const put = (bytes: Uint8Array, at: number) => {
      for (let done = 0; done < bytes.byteLength; ) done += writeSync(fd, bytes, done, bytes.byteLength - done, at + done);
    };
    for (const [name, shape] of paramShapes(config)) {
      const t = lookup(weights, name);
      checkWeight(name, shape, t);
      const data = t!.data as Float32Array;
      offset = Math.ceil(offset / ALIGN) * ALIGN;
      const half = isHalfWeight(shape, dtype);
      const length = data.length * (half ? 2 : 4);
      if (half) {
        const buf = new Uint16Array(Math.min(CHUNK_VALUES, data.length));
        for (let at = 0; at < data.length; at += CHUNK_VALUES) {
          const part = data.subarray(at, Math.min(at + CHUNK_VALUES, data.length));
          const out = narrow(part, "F16", buf.subarray(0, part.length));
          put(new Uint8Array(out.buffer, 0, out.byteLength), offset + at * 2);
        }
      } else {
        put(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), offset); // little-endian hosts only, as safetensors.ts
      }
      tensors.set(name, { location: file, offset, length, dataType: half ? TensorProto_DataType.FLOAT16 : TensorProto_DataType.FLOAT, dims: shape });
      offset += length;
    }
    closeSync(fd);
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
    if (into) rmSync(join(folder, file), { force: true });
    release();
    throw err;
  }
  return { folder, tensors, bytes: offset, owned: into === undefined, release };
}

/**
 * Removes weights folders left by processes that died before releasing them (a crash, SIGKILL): they would hold
 * disk (or, in a memory-backed folder such as /dev/shm, memory) until reboot. A folder's name carries its owner's
 * pid; a folder whose owner is alive is left alone.
 */
function removeOrphans(base: string): void {
  let names: string[];
  try {
    names = readdirSync(base);
  } catch {
    return;
  }
  for (const name of names) {
    const owner = /^sppo-onnx-(\d+)-/.exec(name);
    if (!owner || Number(owner[1]) === process.pid) continue;
    try {
      process.kill(Number(owner[1]), 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ESRCH") rmSync(join(base, name), { recursive: true, force: true });
    }
  }
}

/** Bytes of the weights file `writeExternalWeights` writes for `config` (tensors at ALIGN-aligned offsets). */
export function weightsFileBytes(config: ModelConfig, dtype: OnnxWeightDtype): number {
  let offset = 0;
  for (const [, shape] of paramShapes(config)) {
    offset = Math.ceil(offset / ALIGN) * ALIGN + shape.reduce((a, d) => a * d, 1) * (isHalfWeight(shape, dtype) ? 2 : 4);
  }
  return offset;
}

/** A parameter by HF name; GPT-2 checkpoints saved from `GPT2Model` lack the `transformer.` prefix. */
function lookup(weights: TensorLookup, name: string): RawTensor | undefined {
  if (weights.has(name)) return weights.get(name);
  const short = name.startsWith("transformer.") ? name.slice("transformer.".length) : undefined;
  return short && weights.has(short) ? weights.get(short) : undefined;
}

function checkWeight(name: string, shape: readonly number[], t: RawTensor | undefined): void {
  if (!t) throw new TypeError(`ONNX weights: weight ${name} is missing`);
  if (t.shape.join() !== shape.join()) throw new TypeError(`ONNX weights: weight ${name} has shape [${t.shape}], the config implies [${shape}]`);
  if (!(t.data instanceof Float32Array)) throw new TypeError(`ONNX weights: weight ${name} must be float32`);
}

/** The initializers of `weights` as TensorProtos that point at their bytes (no data of their own). */
export function externalInitializers(weights: ExternalWeights): TensorProto[] {
  return [...weights.tensors].map(([name, t]) =>
    create(TensorProtoSchema, {
      name,
      dims: t.dims.map((d) => BigInt(d)),
      dataType: t.dataType,
      dataLocation: TensorProto_DataLocation.EXTERNAL,
      externalData: [
        { key: "location", value: t.location },
        { key: "offset", value: String(t.offset) },
        { key: "length", value: String(t.length) },
      ],
    }),
  );
}
