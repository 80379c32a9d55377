/**
 * A small reader and writer for the safetensors format (https://github.com/huggingface/safetensors):
 * an 8-byte little-endian header length N, N bytes of JSON header
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: { string: string } }`, then the raw
 * little-endian tensor bytes (offsets relative to the end of the header). Nothing in the file is executed.
 *
 * Reading converts F32, F16, BF16 and F64 to Float32Array and I32/I64 to Int32Array; writing emits F32 (and I32).
 * Every error names the file and, where there is one, the tensor.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { Code, kindError, RpcError } from "../lib/errors.js";

/** A tensor as plain data, in row-major order. */
export interface RawTensor {
  shape: number[];
  data: Float32Array | Int32Array;
}

const BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
const READABLE = new Set(["F64", "F32", "F16", "BF16", "I64", "I32"]);

/** IEEE half → float. */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

function decode(dtype: string, bytes: Uint8Array, count: number): Float32Array | Int32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case "F32": {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    }
    case "F64": {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(i * 8, true);
      return out;
    }
    case "F16": {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(i * 2, true));
      return out;
    }
    case "BF16": {
      // bfloat16 is the top half of a float32.
      const u32 = new Uint32Array(count);
      for (let i = 0; i < count; i++) u32[i] = view.getUint16(i * 2, true) << 16;
      return new Float32Array(u32.buffer);
    }
    case "I32": {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt32(i * 4, true);
      return out;
    }
    case "I64": {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = Number(view.getBigInt64(i * 8, true));
      return out;
    }
    default:
      throw new RpcError(Code.INTERNAL, `safetensors: no decoder for dtype ${dtype} (READABLE lists it)`);
  }
}

/** Parses a safetensors buffer. `file` is used in error messages only. */
export function parseSafetensors(buf: Uint8Array, file = "<buffer>"): Map<string, RawTensor> {
  if (buf.byteLength < 8) throw kindError("model-format", `${file}: truncated: ${buf.byteLength} bytes, shorter than the 8-byte header length`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (8 + headerLen > buf.byteLength) {
    throw kindError("model-format", `${file}: truncated: header says ${headerLen} bytes of JSON but the file has ${buf.byteLength - 8} after the length`);
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + headerLen)));
  } catch (err) {
    throw kindError("model-format", `${file}: header is not valid JSON (${(err as Error).message})`);
  }
  const dataStart = 8 + headerLen;
  const dataLen = buf.byteLength - dataStart;
  const out = new Map<string, RawTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets: offsets } = entry as { dtype: string; shape: number[]; data_offsets: [number, number] };
    if (typeof dtype !== "string" || !Array.isArray(shape) || !Array.isArray(offsets) || offsets.length !== 2) {
      throw kindError("model-format", `${file}: tensor ${name}: header entry needs dtype, shape and data_offsets`);
    }
    if (!(dtype in BYTES)) throw kindError("model-format", `${file}: tensor ${name}: unknown dtype ${dtype}`);
    if (!READABLE.has(dtype)) throw kindError("model-format", `${file}: tensor ${name}: dtype ${dtype} is not supported (F32, F16, BF16, F64, I32, I64 are)`);
    const count = shape.reduce((p, d) => p * d, 1);
    const [begin, end] = offsets;
    if (end - begin !== count * BYTES[dtype]) {
      throw kindError("model-format", `${file}: tensor ${name}: ${end - begin} bytes for shape [${shape}] of ${dtype}, expected ${count * BYTES[dtype]}`);
    }
    if (begin < 0 || end > dataLen) {
      throw kindError("model-format", `${file}: truncated: tensor ${name} needs bytes ${begin}..${end} of the data section but it has ${dataLen}`);
    }
    out.set(name, { shape: [...shape], data: decode(dtype, buf.subarray(dataStart + begin, dataStart + end), count) });
  }
  return out;
}

/** Reads a .safetensors file. */
export function readSafetensors(path: string): Map<string, RawTensor> {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (err) {
    throw kindError("model-format", `${path}: cannot read it (${(err as Error).message})`);
  }
  return parseSafetensors(buf, path);
}

/** Serialises tensors (F32 for Float32Array, I32 for Int32Array) in name order with optional string metadata. */
export function serializeSafetensors(tensors: Map<string, RawTensor>, metadata: Record<string, string> = { format: "pt" }): Buffer {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const count = t.shape.reduce((p, d) => p * d, 1);
    if (count !== t.data.length) throw kindError("model-format", `tensor ${name}: shape [${t.shape}] holds ${count} values, data has ${t.data.length}`);
    header[name] = { dtype: t.data instanceof Int32Array ? "I32" : "F32", shape: t.shape, data_offsets: [offset, offset + count * 4] };
    offset += count * 4;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so that the data section starts 8-byte aligned (as the reference writer does).
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, "utf8");
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let pos = 8 + headerBytes.length;
  for (const name of names) {
    const { data } = tensors.get(name)!;
    const le = Buffer.from(data.buffer, data.byteOffset, data.byteLength); // this code runs on little-endian hosts only
    le.copy(out, pos);
    pos += data.byteLength;
  }
  return out;
}

/** Writes a .safetensors file. */
export function writeSafetensors(path: string, tensors: Map<string, RawTensor>, metadata?: Record<string, string>): void {
  writeFileSync(path, serializeSafetensors(tensors, metadata));
}
