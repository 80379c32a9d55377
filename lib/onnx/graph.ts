/**
 * GraphBuilder: writes an ONNX model node by node from TypeScript.
 *
 * Values are named strings. `input()`/`initializer()`/`node()` return the names of what they define, so a graph reads
 * like the computation it encodes; `build()` checks that every node input is defined before it is used (ONNX graphs
 * are topologically sorted) and that every graph output is produced, then returns a ModelProto, and
 * `serializeModel()` gives the bytes onnxruntime loads.
 *
 * Example — y = x · W + b over a symbolic batch:
 * ```ts
 * const g = new GraphBuilder({ name: "linear", opset: 17 });
 * const x = g.input("x", DataType.FLOAT, ["batch", 4]);
 * const w = g.initializer("W", new Float32Array(12), [4, 3]);
 * const b = g.initializer("b", new Float32Array(3), [3]);
 * g.output("y", DataType.FLOAT, ["batch", 3], g.add(g.matMul(x, w), b));
 * const bytes = serializeModel(g.build());
 * ```
 *
 * The typed helpers (`add`, `gather`, `reduceSum`, ...) emit the opset-13+ forms (axes as an input, not an
 * attribute), so the builder requires opset ≥ 13; `node()` writes any operator of any domain as given.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type GraphProto,
  GraphProtoSchema,
  type ModelProto,
  ModelProtoSchema,
  type NodeProto,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  type TensorProto,
  TensorProto_DataType,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  type ValueInfoProto,
  ValueInfoProtoSchema,
} from "onnx-buf";
import { type Attrs, attribute, float } from "./attribute.js";
import { int64Tensor, type TensorData, tensor } from "./tensor.js";

/** A dimension: a fixed size, or a symbolic name shared by every value with the same size ("batch"). */
export type Dim = number | string;

export interface GraphBuilderOptions {
  /** Graph name, stored in the model. @default "graph" */
  name?: string;
  /** Default-domain (ai.onnx) opset version. Must be ≥ 13. @default 17 */
  opset?: number;
  /** Opsets of other domains the nodes use, e.g. `{ "com.microsoft": 1 }`. @default {} */
  extraOpsets?: Record<string, number>;
}

export interface BuildOptions {
  /** ONNX IR version; 8 goes with opsets up to 17 and loads in every onnxruntime since 1.10. @default 8 */
  irVersion?: number;
  /** Stored as producer_name. @default "sppo" */
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  /** Free-form key/value pairs stored in the model's metadata_props. */
  metadata?: Record<string, string>;
}

export interface NodeOptions {
  /** Names of the outputs; when omitted, `outputCount` fresh names are made. */
  outputs?: string[];
  /** Number of outputs to name automatically. @default 1 */
  outputCount?: number;
  /** Node name. @default "<opType>_<n>" */
  name?: string;
  /** Operator domain. @default "" (ai.onnx) */
  domain?: string;
}

/** A ValueInfoProto for a tensor of `elemType` and `dims` (undefined dims: unknown rank). */
export function tensorValueInfo(name: string, elemType: TensorProto_DataType, dims?: readonly Dim[]): ValueInfoProto {
  const shape =
    dims === undefined
      ? undefined
      : create(TensorShapeProtoSchema, {
          dim: dims.map((d) =>
            create(TensorShapeProto_DimensionSchema, {
              value: typeof d === "number" ? { case: "dimValue", value: BigInt(d) } : { case: "dimParam", value: d },
            }),
          ),
        });
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, { value: { case: "tensorType", value: create(TypeProto_TensorSchema, { elemType, shape }) } }),
  });
}

export class GraphBuilder {
  readonly name: string;
  readonly opset: number;
  private readonly extraOpsets: Record<string, number>;
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private readonly valueInfos: ValueInfoProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly nodes: NodeProto[] = [];
  /** Every value name defined so far (inputs, initializers, node outputs). */
  private readonly defined = new Set<string>();
  private counter = 0;

  constructor(options: GraphBuilderOptions = {}) {
    this.name = options.name ?? "graph";
    this.opset = options.opset ?? 17;
    if (!Number.isInteger(this.opset) || this.opset < 13) throw new TypeError(`opset: must be an integer ≥ 13, got ${this.opset}`);
    this.extraOpsets = { ...(options.extraOpsets ?? {}) };
  }

  /** A fresh value name with a readable prefix. */
  fresh(prefix: string): string {
    let name: string;
    do name = `${prefix}_${this.counter++}`;
    while (this.defined.has(name));
    return name;
  }

  private define(name: string, what: string): void {
    if (name === "") throw new TypeError(`${what}: a value name must not be empty`);
    if (this.defined.has(name)) throw new TypeError(`${what}: value "${name}" is already defined`);
    this.defined.add(name);
  }

  /** Declares a graph input; returns its name. */
  input(name: string, elemType: TensorProto_DataType, dims: readonly Dim[]): string {
    this.define(name, `input ${name}`);
    this.inputs.push(tensorValueInfo(name, elemType, dims));
    return name;
  }

  /** Adds a constant weight from a typed array (the element type follows the array); returns its name. */
  initializer(name: string, data: TensorData, dims: readonly number[]): string {
    this.define(name, `initializer ${name}`);
    this.initializers.push(tensor(name, data, dims));
    return name;
  }

  /** Adds a prepared TensorProto as a weight; returns its name. */
  initializerTensor(t: TensorProto): string {
    this.define(t.name, `initializer ${t.name}`);
    this.initializers.push(t);
    return t.name;
  }

  /** A float32 scalar or vector constant (as an initializer with a fresh name). */
  constFloat(values: number | readonly number[], dims?: readonly number[]): string {
    const list = typeof values === "number" ? [values] : values;
    return this.initializer(this.fresh("const"), Float32Array.from(list), dims ?? (typeof values === "number" ? [] : [list.length]));
  }

  /** An int64 scalar or vector constant (axes, shapes, indices). */
  constInt64(values: number | readonly number[], dims?: readonly number[]): string {
    const list = typeof values === "number" ? [values] : values;
    const name = this.fresh("const");
    this.define(name, `constant ${name}`);
    this.initializers.push(int64Tensor(name, list, dims ?? (typeof values === "number" ? [] : [list.length])));
    return name;
  }

  /** Records the type of an intermediate value (optional; helps tools and shape inference). */
  valueInfo(name: string, elemType: TensorProto_DataType, dims?: readonly Dim[]): void {
    this.valueInfos.push(tensorValueInfo(name, elemType, dims));
  }

  /**
   * Appends a node. Inputs must already be defined (use "" for a skipped optional input). Returns the output names.
   */
  nodeOutputs(opType: string, inputs: readonly string[], attrs: Attrs = {}, options: NodeOptions = {}): string[] {
    const nodeName = options.name ?? `${opType}_${this.counter++}`;
    for (const [i, input] of inputs.entries()) {
      if (input !== "" && !this.defined.has(input)) {
        throw new TypeError(`node ${nodeName} (${opType}): input ${i} "${input}" is not defined before use`);
      }
    }
    const outputs = options.outputs ?? Array.from({ length: options.outputCount ?? 1 }, () => this.fresh(opType.toLowerCase()));
    for (const output of outputs) this.define(output, `node ${nodeName} (${opType})`);
    const attribute_ = Object.entries(attrs)
      .filter((entry): entry is [string, NonNullable<(typeof entry)[1]>] => entry[1] !== undefined)
      .map(([key, value]) => attribute(key, value));
    this.nodes.push(
      create(NodeProtoSchema, { opType, input: [...inputs], output: outputs, name: nodeName, domain: options.domain ?? "", attribute: attribute_ }),
    );
    return outputs;
  }

  /** Appends a single-output node; returns its output name. */
  node(opType: string, inputs: readonly string[], attrs: Attrs = {}, options: Omit<NodeOptions, "outputCount"> = {}): string {
    const outputs = this.nodeOutputs(opType, inputs, attrs, { ...options, outputCount: 1 });
    if (outputs.length !== 1) throw new TypeError(`node ${opType}: node() makes exactly one output; use nodeOutputs()`);
    return outputs[0];
  }

  /**
   * Declares a graph output computed by `value`. When `value` has another name an Identity node renames it (ONNX
   * runtimes fold it away).
   */
  output(name: string, elemType: TensorProto_DataType, dims: readonly Dim[] | undefined, value: string = name): string {
    if (value !== name) this.node("Identity", [value], {}, { outputs: [name] });
    else if (!this.defined.has(name)) throw new TypeError(`output ${name}: no value of that name is defined`);
    this.outputs.push(tensorValueInfo(name, elemType, dims));
    return name;
  }

  // ---- Typed helpers for common operators (opset ≥ 13 forms) ----

  add(a: string, b: string): string {
    return this.node("Add", [a, b]);
  }
  sub(a: string, b: string): string {
    return this.node("Sub", [a, b]);
  }
  mul(a: string, b: string): string {
    return this.node("Mul", [a, b]);
  }
  div(a: string, b: string): string {
    return this.node("Div", [a, b]);
  }
  min(...values: string[]): string {
    return this.node("Min", values);
  }
  max(...values: string[]): string {
    return this.node("Max", values);
  }
  /** Matrix product with NumPy broadcasting over leading dims. */
  matMul(a: string, b: string): string {
    return this.node("MatMul", [a, b]);
  }
  /** Gemm: alpha·A'·B' + beta·C with optional transposes. */
  gemm(a: string, b: string, c?: string, options: { transA?: boolean; transB?: boolean } = {}): string {
    return this.node("Gemm", c ? [a, b, c] : [a, b], { transA: options.transA ? 1 : undefined, transB: options.transB ? 1 : undefined });
  }
  /** Rows of `data` picked by `indices` along `axis` (an embedding lookup with axis 0). */
  gather(data: string, indices: string, axis = 0): string {
    return this.node("Gather", [data, indices], { axis });
  }
  cast(x: string, to: TensorProto_DataType): string {
    return this.node("Cast", [x], { to });
  }
  equal(a: string, b: string): string {
    return this.node("Equal", [a, b]);
  }
  /** Cumulative sum along a fixed axis. */
  cumSum(x: string, axis: number, options: { exclusive?: boolean; reverse?: boolean } = {}): string {
    return this.node("CumSum", [x, this.constInt64(axis)], {
      exclusive: options.exclusive ? 1 : undefined,
      reverse: options.reverse ? 1 : undefined,
    });
  }
  reduceSum(x: string, axes: readonly number[], keepdims = false): string {
    return this.node("ReduceSum", [x, this.constInt64(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  reduceMean(x: string, axes: readonly number[], keepdims = false): string {
    // ReduceMean takes axes as an input only from opset 18.
    if (this.opset >= 18) return this.node("ReduceMean", [x, this.constInt64(axes)], { keepdims: keepdims ? 1 : 0 });
    return this.node("ReduceMean", [x], { axes: [...axes], keepdims: keepdims ? 1 : 0 });
  }
  unsqueeze(x: string, axes: readonly number[]): string {
    return this.node("Unsqueeze", [x, this.constInt64(axes)]);
  }
  squeeze(x: string, axes: readonly number[]): string {
    return this.node("Squeeze", [x, this.constInt64(axes)]);
  }
  reshape(x: string, shape: readonly number[]): string {
    return this.node("Reshape", [x, this.constInt64(shape)]);
  }
  transpose(x: string, perm: readonly number[]): string {
    return this.node("Transpose", [x], { perm: [...perm] });
  }
  concat(values: readonly string[], axis: number): string {
    return this.node("Concat", values, { axis });
  }
  sigmoid(x: string): string {
    return this.node("Sigmoid", [x]);
  }
  tanh(x: string): string {
    return this.node("Tanh", [x]);
  }
  relu(x: string): string {
    return this.node("Relu", [x]);
  }
  neg(x: string): string {
    return this.node("Neg", [x]);
  }
  softmax(x: string, axis = -1): string {
    return this.node("Softmax", [x], { axis });
  }
  where(condition: string, a: string, b: string): string {
    return this.node("Where", [condition, a, b]);
  }
  sqrt(x: string): string {
    return this.node("Sqrt", [x]);
  }
  pow(x: string, exponent: string): string {
    return this.node("Pow", [x, exponent]);
  }
  erf(x: string): string {
    return this.node("Erf", [x]);
  }
  exp(x: string): string {
    return this.node("Exp", [x]);
  }
  log(x: string): string {
    return this.node("Log", [x]);
  }
  /** The shape of x as an int64 vector. */
  shape(x: string): string {
    return this.node("Shape", [x]);
  }
  /** x[starts:ends:steps] along `axes` (Python-style negative indices allowed). */
  slice(x: string, starts: readonly number[], ends: readonly number[], axes?: readonly number[], steps?: readonly number[]): string {
    const inputs = [x, this.constInt64(starts), this.constInt64(ends)];
    if (axes || steps) inputs.push(axes ? this.constInt64(axes) : "");
    if (steps) inputs.push(this.constInt64(steps));
    return this.node("Slice", inputs);
  }
  /** Splits x along `axis` into parts of the given sizes; returns one value per part. */
  split(x: string, sizes: readonly number[], axis: number): string[] {
    return this.nodeOutputs("Split", [x, this.constInt64(sizes)], { axis }, { outputCount: sizes.length });
  }
  /** Layer normalization over the trailing axes from `axis` (ONNX LayerNormalization, opset ≥ 17). */
  layerNormalization(x: string, scale: string, bias: string, options: { axis?: number; epsilon?: number } = {}): string {
    if (this.opset < 17) throw new TypeError(`layerNormalization: LayerNormalization needs opset ≥ 17, the graph has ${this.opset}`);
    return this.node("LayerNormalization", [x, scale, bias], { axis: options.axis ?? -1, epsilon: float(options.epsilon ?? 1e-5) });
  }

  /** The graph alone (for If/Loop bodies); checks it like `build()`. */
  buildGraph(): GraphProto {
    const produced = new Set<string>([...this.inputs.map((v) => v.name), ...this.initializers.map((t) => t.name)]);
    for (const node of this.nodes) for (const output of node.output) produced.add(output);
    for (const output of this.outputs) {
      if (!produced.has(output.name)) throw new TypeError(`graph ${this.name}: output ${output.name} is never produced`);
    }
    if (this.outputs.length === 0) throw new TypeError(`graph ${this.name}: it has no outputs`);
    return create(GraphProtoSchema, {
      name: this.name,
      node: [...this.nodes],
      input: [...this.inputs],
      output: [...this.outputs],
      initializer: [...this.initializers],
      valueInfo: [...this.valueInfos],
    });
  }

  /** The checked model: graph, opset imports, IR version and metadata. */
  build(options: BuildOptions = {}): ModelProto {
    const opsetImport = [
      create(OperatorSetIdProtoSchema, { domain: "", version: BigInt(this.opset) }),
      ...Object.entries(this.extraOpsets).map(([domain, version]) => create(OperatorSetIdProtoSchema, { domain, version: BigInt(version) })),
    ];
    return create(ModelProtoSchema, {
      irVersion: BigInt(options.irVersion ?? 8),
      producerName: options.producerName ?? "sppo",
      producerVersion: options.producerVersion ?? "",
      docString: options.docString ?? "",
      opsetImport,
      graph: this.buildGraph(),
      metadataProps: Object.entries(options.metadata ?? {}).map(([key, value]) => create(StringStringEntryProtoSchema, { key, value })),
    });
  }
}

/** The model's protobuf bytes (what `model.onnx` holds). */
export function serializeModel(model: ModelProto): Uint8Array {
  return toBinary(ModelProtoSchema, model);
}

/** Parses `model.onnx` bytes (for inspection; onnxruntime loads files itself). */
export function parseModel(bytes: Uint8Array): ModelProto {
  return fromBinary(ModelProtoSchema, bytes);
}

/** Metadata of a parsed model as a plain record. */
export function modelMetadata(model: ModelProto): Record<string, string> {
  return Object.fromEntries(model.metadataProps.map((p) => [p.key, p.value]));
}

export { TensorProto_DataType as DataType };
