/**
 * Fast serialization of a policy graph: the graph's structure is encoded by protobuf-es (small), and the weights are
 * written straight into the output buffer as TensorProto `raw_data`, one copy each. protobuf-es's generic writer
 * copies a 13 MB model several times over (a few hundred ms here); this is the refresh path, so it matters.
 *
 * The bytes are a plain ONNX ModelProto: the weight initializers come first in `graph.initializer`, exactly where
 * GraphBuilder would have put them, so parsing the result gives the same message as serializing it whole.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { GraphProtoSchema, type ModelProto, ModelProtoSchema, type TensorProto, TensorProto_DataType, TensorProtoSchema } from "onnx-buf";
import { Code, RpcError } from "../../lib/errors.js";

/** A weight to splice in: float32, row-major. */
export interface WeightBytes {
  name: string;
  dims: readonly number[];
  data: Float32Array;
}

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const tag = (field: number, wire: number) => (field << 3) | wire;
/** Field numbers of onnx.proto. */
const MODEL_GRAPH = 7;
const GRAPH_INITIALIZER = 5;
const TENSOR_DIMS = 1;
const TENSOR_DATA_TYPE = 2;
const TENSOR_NAME = 8;
const TENSOR_RAW_DATA = 9;

const isLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const utf8 = new TextEncoder();

function varintLength(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

/** A cursor over the output buffer. */
class Writer {
  at = 0;
  constructor(readonly buf: Uint8Array) {}
  varint(n: number): void {
    while (n >= 0x80) {
      this.buf[this.at++] = (n % 128) | 0x80;
      n = Math.floor(n / 128);
    }
    this.buf[this.at++] = n;
  }
  bytes(b: Uint8Array): void {
    this.buf.set(b, this.at);
    this.at += b.length;
  }
}

/** TensorProto fields before raw_data's payload: dims, data_type, name, and raw_data's tag and length. */
function tensorHeader(w: WeightBytes): { name: Uint8Array; length: number } {
  const name = utf8.encode(w.name);
  let length = 0;
  for (const d of w.dims) length += 1 + varintLength(d);
  length += 1 + varintLength(TensorProto_DataType.FLOAT);
  length += 1 + varintLength(name.length) + name.length;
  length += 1 + varintLength(w.data.byteLength);
  return { name, length };
}

/**
 * The bytes of `model` with `weights` added as the first initializers of its graph. `model.graph` must not already
 * hold initializers of those names. On a big-endian host it falls back to the generic writer.
 */
export function serializeWithWeights(model: ModelProto, weights: readonly WeightBytes[]): Uint8Array {
  if (!model.graph) throw new TypeError("serializeWithWeights: the model has no graph");
  if (!isLittleEndian) {
    const tensors: TensorProto[] = weights.map((w) =>
      create(TensorProtoSchema, {
        name: w.name,
        dims: w.dims.map((d) => BigInt(d)),
        dataType: TensorProto_DataType.FLOAT,
        floatData: Array.from(w.data),
      }),
    );
    const graph = { ...model.graph, initializer: [...tensors, ...model.graph.initializer] };
    return toBinary(ModelProtoSchema, { ...model, graph });
  }
  const rest = toBinary(ModelProtoSchema, { ...model, graph: undefined });
  const structure = toBinary(GraphProtoSchema, model.graph);
  const headers = weights.map(tensorHeader);
  let graphLength = structure.length;
  weights.forEach((w, i) => {
    const tensorLength = headers[i].length + w.data.byteLength;
    graphLength += 1 + varintLength(tensorLength) + tensorLength;
  });
  const total = rest.length + 1 + varintLength(graphLength) + graphLength;
  // protobuf (and so onnxruntime's parser) refuses messages of 2 GiB or more; such models need external data files.
  if (total >= 2 ** 31) throw new RangeError(`serializeWithWeights: the model would be ${total} bytes; ONNX files of 2 GiB or more need external data, which is not supported yet`);
  const out = new Writer(new Uint8Array(total));
  out.bytes(rest);
  out.varint(tag(MODEL_GRAPH, WIRE_LEN));
  out.varint(graphLength);
  weights.forEach((w, i) => {
    const { name, length } = headers[i];
    out.varint(tag(GRAPH_INITIALIZER, WIRE_LEN));
    out.varint(length + w.data.byteLength);
    for (const d of w.dims) {
      out.varint(tag(TENSOR_DIMS, WIRE_VARINT));
      out.varint(d);
    }
    out.varint(tag(TENSOR_DATA_TYPE, WIRE_VARINT));
    out.varint(TensorProto_DataType.FLOAT);
    out.varint(tag(TENSOR_NAME, WIRE_LEN));
    out.varint(name.length);
    out.bytes(name);
    out.varint(tag(TENSOR_RAW_DATA, WIRE_LEN));
    out.varint(w.data.byteLength);
    out.bytes(new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength));
  });
  out.bytes(structure);
  if (out.at !== total) throw new RpcError(Code.INTERNAL, `serializeWithWeights: wrote ${out.at} bytes, expected ${total}`);
  return out.buf;
}
