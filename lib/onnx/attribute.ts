/**
 * Node attributes from plain values. The ONNX attribute type is inferred: an integer `number` or a `bigint` is INT,
 * a non-integer `number` is FLOAT, arrays follow their elements, strings are STRING(S), a TensorProto is TENSOR and a
 * GraphProto is GRAPH (for If/Loop bodies). An integer-valued float (Elu's `alpha: 1.0`, LayerNormalization's
 * `epsilon` written as 1) must be wrapped in `float()` / `floats()`, since JavaScript cannot tell 1.0 from 1.
 */
import { create } from "@bufbuild/protobuf";
import {
  type AttributeProto,
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  type GraphProto,
  type TensorProto,
} from "onnx-buf";

const FLOAT_MARK = Symbol("onnx.float");

/** A number that must be written as a FLOAT attribute even when it is integral. */
export interface FloatAttr {
  readonly [FLOAT_MARK]: true;
  readonly values: readonly number[];
  readonly list: boolean;
}

/** Forces a FLOAT attribute (`float(1)` for `alpha: 1.0`). */
export function float(value: number): FloatAttr {
  return { [FLOAT_MARK]: true, values: [value], list: false };
}

/** Forces a FLOATS attribute. */
export function floats(values: readonly number[]): FloatAttr {
  return { [FLOAT_MARK]: true, values, list: true };
}

export type AttrValue =
  | number
  | bigint
  | string
  | FloatAttr
  | readonly number[]
  | readonly bigint[]
  | readonly string[]
  | TensorProto
  | GraphProto;

export type Attrs = Record<string, AttrValue | undefined>;

function isFloatAttr(value: unknown): value is FloatAttr {
  return typeof value === "object" && value !== null && FLOAT_MARK in value;
}

function isMessage(value: unknown, typeName: string): boolean {
  return typeof value === "object" && value !== null && (value as { $typeName?: string }).$typeName === typeName;
}

const utf8 = new TextEncoder();

/** One AttributeProto; throws a TypeError naming the attribute when the value has no ONNX form. */
export function attribute(name: string, value: AttrValue): AttributeProto {
  const T = AttributeProto_AttributeType;
  if (isFloatAttr(value)) {
    return value.list
      ? create(AttributeProtoSchema, { name, type: T.FLOATS, floats: [...value.values] })
      : create(AttributeProtoSchema, { name, type: T.FLOAT, f: value.values[0] });
  }
  if (typeof value === "bigint") return create(AttributeProtoSchema, { name, type: T.INT, i: value });
  if (typeof value === "number") {
    if (!Number.isFinite(value) || !Number.isInteger(value)) return create(AttributeProtoSchema, { name, type: T.FLOAT, f: value });
    return create(AttributeProtoSchema, { name, type: T.INT, i: BigInt(value) });
  }
  if (typeof value === "string") return create(AttributeProtoSchema, { name, type: T.STRING, s: utf8.encode(value) });
  if (isMessage(value, "onnx.TensorProto")) return create(AttributeProtoSchema, { name, type: T.TENSOR, t: value as TensorProto });
  if (isMessage(value, "onnx.GraphProto")) return create(AttributeProtoSchema, { name, type: T.GRAPH, g: value as GraphProto });
  if (Array.isArray(value)) {
    const list = value as readonly unknown[];
    if (list.every((v) => typeof v === "bigint" || (typeof v === "number" && Number.isInteger(v)))) {
      return create(AttributeProtoSchema, { name, type: T.INTS, ints: list.map((v) => BigInt(v as number | bigint)) });
    }
    if (list.every((v) => typeof v === "number")) return create(AttributeProtoSchema, { name, type: T.FLOATS, floats: list as number[] });
    if (list.every((v) => typeof v === "string")) {
      return create(AttributeProtoSchema, { name, type: T.STRINGS, strings: (list as string[]).map((s) => utf8.encode(s)) });
    }
  }
  throw new TypeError(`attribute ${name}: cannot encode ${String(value)} as an ONNX attribute`);
}
