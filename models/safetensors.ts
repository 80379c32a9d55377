/**
 * A reader and writer for the safetensors format (https://github.com/huggingface/safetensors): an 8-byte
 * little-endian header length N, N bytes of JSON header
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: { string: string } }`, then the raw
 * little-endian tensor bytes (offsets relative to the end of the header). Nothing in the file is executed.
 *
 * Files of any size: `SafetensorsFile` reads the header, then one tensor at a time with positioned reads straight
 * into the typed array the tensor ends in — no whole-file buffer, so neither Node's 2 GiB `readFile` limit nor a
 * second copy of the weights. `writeSafetensors` writes the same way, tensor by tensor, to a temporary file renamed
 * into place (a reader that maps the old file keeps a consistent view).
 *
 * Reading converts F32, F16, BF16 and F64 to Float32Array and I32/I64 to Int32Array; writing emits F32 or BF16 for
 * float tensors (I32 for Int32Array). Every error is an RpcError of kind "model-format" (lib/errors.ts) naming the file
 * and, where there is one, the tensor.
 */
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, rmSync, writeSync } from "node:fs";
import { tempSiblingOf } from "../lib/atomic.js";
import { Code, kindError, RpcError } from "../lib/errors.js";
import { type FloatStorage, narrow, safetensorsDtype, widenInPlace } from "./dtype.js";

/** A tensor as plain data, in row-major order. */
export interface RawTensor {
  shape: number[];
  data: Float32Array | Int32Array;
}

/**
 * A tensor whose data is fetched when it is written (a tfjs variable read with `dataSync`), so that writing a model
 * holds one tensor's copy at a time, not the whole model's.
 */
export interface DeferredTensor {
  shape: number[];
  /** Integer data (I32) rather than float. @default false */
  int?: boolean;
  read(): Float32Array | Int32Array;
}

/** What the writers take: tensors in hand or deferred. */
export type WritableTensor = RawTensor | DeferredTensor;

function isDeferred(t: WritableTensor): t is DeferredTensor {
  return "read" in t;
}

/** Where one tensor's bytes are, as the header says. */
export interface TensorEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  byteOffset: number;
  byteLength: number;
}

const BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
const READABLE = new Set(["F64", "F32", "F16", "BF16", "I64", "I32"]);
/** The format caps the header at 100 MB (the reference reader refuses more); a bigger length is a damaged file. */
const MAX_HEADER_BYTES = 100_000_000;
/** Bytes per read or write call: below the 2 GiB a single call may move, and small enough to keep calls short. */
const IO_CHUNK = 1 << 28;

/** The header's JSON text → entries (offsets made absolute) and metadata, every entry checked against `fileBytes`. */
function parseHeader(json: string, headerLength: number, fileBytes: number, file: string): { entries: Map<string, TensorEntry>; metadata: Record<string, string> } {
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(json);
  } catch (err) {
    throw kindError("model-format", `${file}: header is not valid JSON (${(err as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) throw kindError("model-format", `${file}: header is not a JSON object`);
  const dataStart = 8 + headerLength;
  const dataLength = fileBytes - dataStart;
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = (entry ?? {}) as Record<string, string>;
      continue;
    }
    const { dtype, shape, data_offsets: offsets } = (entry ?? {}) as { dtype: unknown; shape: unknown; data_offsets: unknown };
    if (typeof dtype !== "string" || !Array.isArray(shape) || !Array.isArray(offsets) || offsets.length !== 2) {
      throw kindError("model-format", `${file}: tensor ${name}: header entry needs dtype, shape and data_offsets`);
    }
    if (!shape.every((d) => Number.isInteger(d) && d >= 0)) throw kindError("model-format", `${file}: tensor ${name}: shape [${shape}] is not a list of sizes`);
    if (!(dtype in BYTES)) throw kindError("model-format", `${file}: tensor ${name}: unknown dtype ${dtype}`);
    const count = shape.reduce((p: number, d: number) => p * d, 1);
    const [begin, end] = offsets as number[];
    if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || end - begin !== count * BYTES[dtype]) {
      throw kindError("model-format", `${file}: tensor ${name}: ${end - begin} bytes for shape [${shape}] of ${dtype}, expected ${count * BYTES[dtype]}`);
    }
    if (begin < 0 || end > dataLength) {
      throw kindError("model-format", `${file}: truncated: tensor ${name} needs bytes ${begin}..${end} of the data section but it has ${dataLength}`);
    }
    entries.set(name, { name, dtype, shape: [...shape], byteOffset: dataStart + begin, byteLength: end - begin });
  }
  return { entries, metadata };
}

function checkHeaderLength(headerLength: number, fileBytes: number, file: string): void {
  if (headerLength > MAX_HEADER_BYTES) throw kindError("model-format", `${file}: header length ${headerLength} is over the format's 100 MB limit (a damaged file?)`);
  if (8 + headerLength > fileBytes) {
    throw kindError("model-format", `${file}: truncated: header says ${headerLength} bytes of JSON but the file has ${fileBytes - 8} after the length`);
  }
}

/** The typed array a tensor of `dtype` and `count` values is read into (16-bit floats are widened in place). */
function allocate(entry: TensorEntry, count: number, file: string): { out: Float32Array | Int32Array; raw: Uint8Array } {
  if (!READABLE.has(entry.dtype)) throw kindError("model-format", `${file}: tensor ${entry.name}: dtype ${entry.dtype} is not supported (F32, F16, BF16, F64, I32, I64 are)`);
  switch (entry.dtype) {
    case "F32":
    case "I32": {
      const out = entry.dtype === "F32" ? new Float32Array(count) : new Int32Array(count);
      return { out, raw: new Uint8Array(out.buffer) };
    }
    case "F16":
    case "BF16": {
      const out = new Float32Array(count);
      return { out, raw: new Uint8Array(out.buffer, count * 2, count * 2) }; // the second half; see widenInPlace
    }
    default:
      // F64 and I64 are rare in checkpoints: one temporary buffer of their own size.
      return { out: entry.dtype === "F64" ? new Float32Array(count) : new Int32Array(count), raw: new Uint8Array(entry.byteLength) };
  }
}

/** Finishes a tensor whose bytes are in `raw` (see `allocate`). */
function finish(entry: TensorEntry, out: Float32Array | Int32Array, raw: Uint8Array): Float32Array | Int32Array {
  if (entry.dtype === "F16" || entry.dtype === "BF16") widenInPlace(out as Float32Array, entry.dtype);
  else if (entry.dtype === "F64") {
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat64(i * 8, true);
  } else if (entry.dtype === "I64") {
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = Number(view.getBigInt64(i * 8, true));
  }
  return out;
}

/**
 * An open safetensors file: its header is read at `open`, tensors are read one by one on request with positioned
 * reads. Close it when done (tensors already read stay valid).
 *
 *   const f = SafetensorsFile.open("model.safetensors");
 *   for (const name of f.entries.keys()) use(name, f.read(name));
 *   f.close();
 */
export class SafetensorsFile {
  private fd: number | undefined;

  private constructor(
    readonly path: string,
    fd: number,
    /** Most bytes one read call moves. */
    private readonly chunkBytes: number,
    /** Tensors by name, with absolute byte offsets (ONNX external data can point at them). */
    readonly entries: ReadonlyMap<string, TensorEntry>,
    /** The header's `__metadata__`. */
    readonly metadata: Readonly<Record<string, string>>,
  ) {
    this.fd = fd;
  }

  /**
   * Opens `path` and reads its header; RpcError of kind "model-format" (naming the file) when it is missing or malformed.
   * @param options.chunkBytes most bytes per read call (tests lower it to exercise multi-read tensors). @default 256 MiB
   */
  static open(path: string, options: { chunkBytes?: number } = {}): SafetensorsFile {
    const chunkBytes = options.chunkBytes ?? IO_CHUNK;
    if (!Number.isInteger(chunkBytes) || chunkBytes < 1 || chunkBytes > IO_CHUNK) throw new RangeError(`chunkBytes must be an integer in [1, ${IO_CHUNK}], got ${chunkBytes}`);
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (err) {
      throw kindError("model-format", `${path}: cannot read it (${(err as Error).message})`);
    }
    try {
      const fileBytes = fstatSync(fd).size;
      if (fileBytes < 8) throw kindError("model-format", `${path}: truncated: ${fileBytes} bytes, shorter than the 8-byte header length`);
      const lengthBytes = Buffer.alloc(8);
      readSync(fd, lengthBytes, 0, 8, 0);
      const headerLength = Number(lengthBytes.readBigUInt64LE(0));
      checkHeaderLength(headerLength, fileBytes, path);
      const json = Buffer.alloc(headerLength);
      readFully(fd, json, 8, path, chunkBytes);
      const { entries, metadata } = parseHeader(json.toString("utf8"), headerLength, fileBytes, path);
      return new SafetensorsFile(path, fd, chunkBytes, entries, metadata);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** Reads tensor `name` (F32/F16/BF16/F64 → Float32Array, I32/I64 → Int32Array). */
  read(name: string): RawTensor {
    const entry = this.entries.get(name);
    if (!entry) throw kindError("model-format", `${this.path}: tensor ${name} is not in the file`);
    if (this.fd === undefined) throw new RpcError(Code.INTERNAL, `SafetensorsFile ${this.path}: read after close()`);
    const count = entry.shape.reduce((p, d) => p * d, 1);
    const { out, raw } = allocate(entry, count, this.path);
    readFully(this.fd, raw, entry.byteOffset, this.path, this.chunkBytes, entry.name);
    return { shape: [...entry.shape], data: finish(entry, out, raw) };
  }

  /** Reads every tensor into a Map (in header order). For small files; big ones are read tensor by tensor. */
  readAll(): Map<string, RawTensor> {
    const out = new Map<string, RawTensor>();
    for (const name of this.entries.keys()) out.set(name, this.read(name));
    return out;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Fills `into` from `fd` at `position`, in chunks; a short file is a RpcError of kind "model-format". */
function readFully(fd: number, into: Uint8Array, position: number, file: string, chunkBytes: number, tensor?: string): void {
  let done = 0;
  while (done < into.byteLength) {
    const n = readSync(fd, into, done, Math.min(chunkBytes, into.byteLength - done), position + done);
    if (n === 0) throw kindError("model-format", `${file}: truncated${tensor ? ` in tensor ${tensor}` : ""}: the file ended ${into.byteLength - done} bytes early`);
    done += n;
  }
}

/** Parses a safetensors file held in memory. `file` is used in error messages only. */
export function parseSafetensors(buf: Uint8Array, file = "<buffer>"): Map<string, RawTensor> {
  if (buf.byteLength < 8) throw kindError("model-format", `${file}: truncated: ${buf.byteLength} bytes, shorter than the 8-byte header length`);
  const headerLength = Number(new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true));
  checkHeaderLength(headerLength, buf.byteLength, file);
  const { entries } = parseHeader(new TextDecoder().decode(buf.subarray(8, 8 + headerLength)), headerLength, buf.byteLength, file);
  const out = new Map<string, RawTensor>();
  for (const entry of entries.values()) {
    const count = entry.shape.reduce((p, d) => p * d, 1);
    const { out: data, raw } = allocate(entry, count, file);
    raw.set(buf.subarray(entry.byteOffset, entry.byteOffset + entry.byteLength));
    out.set(entry.name, { shape: [...entry.shape], data: finish(entry, data, raw) });
  }
  return out;
}

/** Reads a whole .safetensors file into a Map, tensor by tensor (no whole-file buffer). */
export function readSafetensors(path: string): Map<string, RawTensor> {
  const file = SafetensorsFile.open(path);
  try {
    return file.readAll();
  } finally {
    file.close();
  }
}

/** How tensors are written. */
export interface WriteOptions {
  /** Storage of float tensors: "float32" (F32) or "bfloat16" (BF16, round to nearest even). @default "float32" */
  dtype?: FloatStorage;
}

/** The header bytes (8-byte length + JSON padded so the data starts 8-byte aligned) and each tensor's data offset. */
function layout(names: readonly string[], tensors: ReadonlyMap<string, WritableTensor>, metadata: Record<string, string>, storage: FloatStorage): { header: Buffer; dataBytes: number } {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const count = t.shape.reduce((p, d) => p * d, 1);
    if (!isDeferred(t) && count !== t.data.length) throw kindError("model-format", `tensor ${name}: shape [${t.shape}] holds ${count} values, data has ${t.data.length}`);
    const int = isDeferred(t) ? t.int === true : t.data instanceof Int32Array;
    const dtype = int ? "I32" : safetensorsDtype(storage);
    const bytes = count * BYTES[dtype];
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so that the data section starts 8-byte aligned (as the reference writer does).
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const text = Buffer.from(json, "utf8");
  const out = Buffer.alloc(8 + text.length);
  out.writeBigUInt64LE(BigInt(text.length), 0);
  text.copy(out, 8);
  return { header: out, dataBytes: offset };
}

/** The bytes of one tensor as stored, in pieces of at most IO_CHUNK bytes (BF16 is converted piece by piece). */
function* tensorBytes(name: string, t: WritableTensor, storage: FloatStorage): Generator<Uint8Array> {
  const data = isDeferred(t) ? t.read() : t.data;
  const count = t.shape.reduce((p, d) => p * d, 1);
  if (data.length !== count) throw kindError("model-format", `tensor ${name}: shape [${t.shape}] holds ${count} values, data has ${data.length}`);
  if (data instanceof Int32Array || storage === "float32") {
    // This code runs on little-endian hosts only (the typed arrays' bytes are the file's bytes).
    for (let at = 0; at < data.byteLength; at += IO_CHUNK) yield new Uint8Array(data.buffer, data.byteOffset + at, Math.min(IO_CHUNK, data.byteLength - at));
    return;
  }
  const step = IO_CHUNK / 2;
  const half = new Uint16Array(Math.min(step, data.length));
  for (let at = 0; at < data.length; at += step) {
    const part = data.subarray(at, Math.min(at + step, data.length));
    const out = narrow(part, "BF16", half.subarray(0, part.length));
    yield new Uint8Array(out.buffer, 0, out.byteLength);
  }
}

/**
 * Serialises tensors (float ones as F32 or BF16, Int32Array as I32) in name order with optional string metadata,
 * into one buffer. For small sets (tests, optimizer state); `writeSafetensors` streams to a file.
 */
export function serializeSafetensors(tensors: ReadonlyMap<string, WritableTensor>, metadata: Record<string, string> = { format: "pt" }, options: WriteOptions = {}): Buffer {
  const names = [...tensors.keys()].sort();
  const storage = options.dtype ?? "float32";
  const { header, dataBytes } = layout(names, tensors, metadata, storage);
  const out = Buffer.alloc(header.length + dataBytes);
  header.copy(out, 0);
  let pos = header.length;
  for (const name of names) {
    for (const piece of tensorBytes(name, tensors.get(name)!, storage)) {
      out.set(piece, pos);
      pos += piece.byteLength;
    }
  }
  return out;
}

/**
 * Writes a .safetensors file tensor by tensor (no whole-file buffer), in name order, through a temporary file
 * renamed into place. Returns the bytes of tensor data written (what an index's `total_size` counts).
 */
export function writeSafetensors(path: string, tensors: ReadonlyMap<string, WritableTensor>, metadata: Record<string, string> = { format: "pt" }, options: WriteOptions = {}): number {
  const names = [...tensors.keys()].sort();
  const storage = options.dtype ?? "float32";
  const { header, dataBytes } = layout(names, tensors, metadata, storage);
  const tmp = tempSiblingOf(path);
  const fd = openSync(tmp, "w");
  try {
    let pos = 0;
    const write = (bytes: Uint8Array) => {
      for (let done = 0; done < bytes.byteLength; ) done += writeSync(fd, bytes, done, bytes.byteLength - done, pos + done);
      pos += bytes.byteLength;
    };
    write(header);
    for (const name of names) for (const piece of tensorBytes(name, tensors.get(name)!, storage)) write(piece);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, path);
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
    rmSync(tmp, { force: true });
    throw err;
  }
  return dataBytes;
}
