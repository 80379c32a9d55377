/**
 * ONNX tensors from JavaScript typed arrays: the element type follows the array (Float32Array → FLOAT,
 * BigInt64Array → INT64, ...), the bytes go into `raw_data` little-endian as the ONNX spec requires, and the dims
 * are checked against the element count so that a wrong shape fails here and not inside onnxruntime.
 */
import { create } from "@bufbuild/protobuf";
import { type TensorProto, TensorProto_DataType, TensorProtoSchema } from "onnx-buf";

export { TensorProto_DataType as DataType };

/** Typed arrays that map one-to-one onto an ONNX element type. */
export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

/** The ONNX element type of a typed array. Uint8Array means UINT8 (use `boolTensor` for BOOL). */
export function dataTypeOf(data: TensorData): TensorProto_DataType {
  if (data instanceof Float32Array) return TensorProto_DataType.FLOAT;
  if (data instanceof Float64Array) return TensorProto_DataType.DOUBLE;
  if (data instanceof Int8Array) return TensorProto_DataType.INT8;
  if (data instanceof Uint8Array) return TensorProto_DataType.UINT8;
  if (data instanceof Int16Array) return TensorProto_DataType.INT16;
  if (data instanceof Uint16Array) return TensorProto_DataType.UINT16;
  if (data instanceof Int32Array) return TensorProto_DataType.INT32;
  if (data instanceof Uint32Array) return TensorProto_DataType.UINT32;
  if (data instanceof BigInt64Array) return TensorProto_DataType.INT64;
  if (data instanceof BigUint64Array) return TensorProto_DataType.UINT64;
  throw new TypeError("tensor data: unsupported array type");
}

const isLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The array's bytes in little-endian order (a copy, so later edits of `data` do not change the tensor). */
function littleEndianBytes(data: TensorData): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(data.byteLength);
  bytes.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  const width = data.BYTES_PER_ELEMENT;
  if (!isLittleEndian && width > 1) {
    for (let at = 0; at < bytes.length; at += width) bytes.subarray(at, at + width).reverse();
  }
  return bytes;
}

/** Number of elements of a shape (1 for a scalar, []). */
export function elementCount(dims: readonly number[]): number {
  return dims.reduce((n, d) => n * d, 1);
}

function checkDims(name: string, dims: readonly number[], length: number): void {
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 0) throw new TypeError(`tensor ${name}: dims must be non-negative integers, got [${dims.join(", ")}]`);
  }
  if (elementCount(dims) !== length) {
    throw new TypeError(`tensor ${name}: dims [${dims.join(", ")}] hold ${elementCount(dims)} elements, data has ${length}`);
  }
}

/**
 * A named tensor of `dims` from a typed array (row-major). Pass `dims = []` for a scalar.
 * @throws TypeError when the element count does not match the dims.
 */
export function tensor(name: string, data: TensorData, dims: readonly number[]): TensorProto {
  checkDims(name, dims, data.length);
  return create(TensorProtoSchema, {
    name,
    dims: dims.map((d) => BigInt(d)),
    dataType: dataTypeOf(data),
    rawData: littleEndianBytes(data),
  });
}

/** A BOOL tensor (one byte per element, 0 or 1). */
export function boolTensor(name: string, data: readonly boolean[], dims: readonly number[]): TensorProto {
  checkDims(name, dims, data.length);
  return create(TensorProtoSchema, {
    name,
    dims: dims.map((d) => BigInt(d)),
    dataType: TensorProto_DataType.BOOL,
    rawData: Uint8Array.from(data, (b) => (b ? 1 : 0)),
  });
}

/** A float32 tensor from plain numbers. */
export function floatTensor(name: string, values: readonly number[], dims: readonly number[] = [values.length]): TensorProto {
  return tensor(name, Float32Array.from(values), dims);
}

/** An int64 tensor from plain integers (shapes, axes, token ids). */
export function int64Tensor(name: string, values: readonly (number | bigint)[], dims: readonly number[] = [values.length]): TensorProto {
  return tensor(name, BigInt64Array.from(values, (v) => BigInt(v)), dims);
}

/** Reads a tensor's values back (raw_data or the typed fields), for tests and inspection. */
export function tensorValues(t: TensorProto): number[] | bigint[] {
  const raw = t.rawData;
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const n = elementCount(t.dims.map(Number));
  const read = <T>(width: number, get: (offset: number) => T): T[] => Array.from({ length: n }, (_, i) => get(i * width));
  switch (t.dataType) {
    case TensorProto_DataType.FLOAT:
      return raw.length > 0 ? read(4, (o) => view.getFloat32(o, true)) : t.floatData;
    case TensorProto_DataType.DOUBLE:
      return raw.length > 0 ? read(8, (o) => view.getFloat64(o, true)) : t.doubleData;
    case TensorProto_DataType.INT64:
      return raw.length > 0 ? read(8, (o) => view.getBigInt64(o, true)) : t.int64Data;
    case TensorProto_DataType.INT32:
      return raw.length > 0 ? read(4, (o) => view.getInt32(o, true)) : t.int32Data;
    case TensorProto_DataType.BOOL:
    case TensorProto_DataType.UINT8:
      return raw.length > 0 ? read(1, (o) => view.getUint8(o)) : t.int32Data;
    default:
      throw new TypeError(`tensor ${t.name}: reading data type ${TensorProto_DataType[t.dataType]} is not supported`);
  }
}
