/**
 * lib/onnx: graphs built here run in onnxruntime and give the values worked out by hand.
 * Run: node --import tsx --test test/lib/onnx/graph.test.ts
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as ort from "onnxruntime-node";
import {
  AttributeProto_AttributeType,
} from "onnx-buf";
import { attribute, DataType, float, GraphBuilder, int64Tensor, modelMetadata, parseModel, serializeModel, tensor, tensorValues } from "../../../lib/onnx/index.js";

async function session(g: GraphBuilder, metadata?: Record<string, string>): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(serializeModel(g.build({ metadata })));
}

describe("GraphBuilder", () => {
  it("builds y = x·W + b with a symbolic batch that onnxruntime runs", async () => {
    const g = new GraphBuilder({ name: "linear" });
    const x = g.input("x", DataType.FLOAT, ["batch", 2]);
    const w = g.initializer("W", Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]);
    const b = g.initializer("b", Float32Array.from([0.5, -1, 0]), [3]);
    g.output("y", DataType.FLOAT, ["batch", 3], g.add(g.matMul(x, w), b));
    const s = await session(g);
    assert.deepEqual(s.inputNames, ["x"]);
    assert.deepEqual(s.outputNames, ["y"]);
    const meta = s.inputMetadata[0];
    assert.ok(meta.isTensor);
    assert.deepEqual(meta.shape, ["batch", 2]);
    const out = await s.run({ x: new ort.Tensor("float32", Float32Array.from([1, 1, 2, -1]), [2, 2]) });
    // [1,1]·W = [5,7,9] + b = [5.5,6,9]; [2,-1]·W = [2-4, 4-5, 6-6] = [-2,-1,0] + b = [-1.5,-2,0]
    assert.deepEqual(Array.from(out.y.data as Float32Array), [5.5, 6, 9, -1.5, -2, 0]);
    assert.deepEqual(out.y.dims, [2, 3]);
    await s.release();
  });

  it("runs int64 inputs through Gather, CumSum, ReduceSum, Unsqueeze, Cast and Equal", async () => {
    const g = new GraphBuilder({ opset: 17 });
    const ids = g.input("ids", DataType.INT64, ["batch", "length"]);
    const table = g.initializer("table", Float32Array.from([0, 10, 20, 30]), [4, 1]); // vocab 4, dim 1
    const emb = g.squeeze(g.gather(table, ids), [2]); // (batch, length)
    const isThree = g.cast(g.equal(ids, g.constInt64(3)), DataType.FLOAT); // 1 where id == 3
    const after = g.cumSum(isThree, 1); // 1 from the first 3 onwards
    g.output("total", DataType.FLOAT, ["batch"], g.reduceSum(emb, [1]));
    g.output("after_three", DataType.FLOAT, ["batch"], g.reduceSum(g.mul(emb, after), [1]));
    g.output("rows", DataType.FLOAT, ["batch", 1, "length"], g.unsqueeze(emb, [1]));
    const s = await session(g);
    const out = await s.run({ ids: new ort.Tensor("int64", BigInt64Array.from([1n, 3n, 2n, 2n, 0n, 1n]), [2, 3]) });
    assert.deepEqual(Array.from(out.total.data as Float32Array), [10 + 30 + 20, 20 + 0 + 10]);
    assert.deepEqual(Array.from(out.after_three.data as Float32Array), [30 + 20, 0]);
    assert.deepEqual(out.rows.dims, [2, 1, 3]);
  });

  it("runs LayerNormalization, Slice and Split as the helpers write them", async () => {
    const g = new GraphBuilder({ opset: 17 });
    const x = g.input("x", DataType.FLOAT, ["batch", 4]);
    const ones = g.constFloat([1, 1, 1, 1]);
    const zeros = g.constFloat([0, 0, 0, 0]);
    g.output("normed", DataType.FLOAT, ["batch", 4], g.layerNormalization(x, ones, zeros, { epsilon: 0 }));
    g.output("middle", DataType.FLOAT, ["batch", 2], g.slice(x, [1], [3], [1]));
    const [left, right] = g.split(x, [1, 3], 1);
    g.output("left", DataType.FLOAT, ["batch", 1], left);
    g.output("right", DataType.FLOAT, ["batch", 3], right);
    const s = await session(g);
    const out = await s.run({ x: new ort.Tensor("float32", Float32Array.from([1, 2, 3, 4]), [1, 4]) });
    // mean 2.5, variance 1.25: (x − 2.5) / √1.25
    const expected = [1, 2, 3, 4].map((v) => (v - 2.5) / Math.sqrt(1.25));
    for (const [i, v] of Array.from(out.normed.data as Float32Array).entries()) assert.ok(Math.abs(v - expected[i]) < 1e-5);
    assert.deepEqual(Array.from(out.middle.data as Float32Array), [2, 3]);
    assert.deepEqual(Array.from(out.left.data as Float32Array), [1]);
    assert.deepEqual(Array.from(out.right.data as Float32Array), [2, 3, 4]);
    assert.throws(() => new GraphBuilder({ opset: 13 }).layerNormalization("x", "s", "b"), /needs opset ≥ 17/);
  });

  it("keeps metadata and round-trips through parseModel", () => {
    const g = new GraphBuilder({ name: "meta" });
    g.output("y", DataType.FLOAT, [1], g.node("Identity", [g.input("x", DataType.FLOAT, [1])]));
    const bytes = serializeModel(g.build({ metadata: { kind: "test" }, irVersion: 8 }));
    const model = parseModel(bytes);
    assert.equal(model.irVersion, 8n);
    assert.equal(model.opsetImport[0].version, 17n);
    assert.deepEqual(modelMetadata(model), { kind: "test" });
    assert.equal(model.graph?.node[0].opType, "Identity");
    assert.equal(model.graph?.input[0].type?.value.case, "tensorType");
  });

  it("rejects a node whose input is not defined yet, duplicate names and an unproduced output", () => {
    const g = new GraphBuilder();
    assert.throws(() => g.add("a", "b"), /input 0 "a" is not defined/);
    g.input("a", DataType.FLOAT, [1]);
    assert.throws(() => g.input("a", DataType.FLOAT, [1]), /already defined/);
    assert.throws(() => g.output("nothing", DataType.FLOAT, [1]), /no value of that name/);
    assert.throws(() => new GraphBuilder({ opset: 11 }), /opset: must be an integer ≥ 13/);
  });

  it("infers attribute types and lets float() force FLOAT", () => {
    assert.equal(attribute("axis", 1).type, AttributeProto_AttributeType.INT);
    assert.equal(attribute("alpha", 0.5).type, AttributeProto_AttributeType.FLOAT);
    assert.equal(attribute("alpha", float(1)).type, AttributeProto_AttributeType.FLOAT);
    assert.equal(attribute("alpha", float(1)).f, 1);
    assert.deepEqual(attribute("perm", [0, 2, 1]).ints, [0n, 2n, 1n]);
    assert.deepEqual(attribute("scales", [0.5, 2]).floats, [0.5, 2]);
    assert.equal(attribute("mode", "constant").type, AttributeProto_AttributeType.STRING);
    assert.equal(attribute("value", int64Tensor("v", [1, 2])).type, AttributeProto_AttributeType.TENSOR);
    assert.throws(() => attribute("bad", [1, "x"] as unknown as string[]), /attribute bad: cannot encode/);
  });

  it("writes typed-array tensors little-endian and checks their dims", () => {
    const t = tensor("w", Float32Array.from([1.5, -2]), [2, 1]);
    assert.equal(t.dataType, DataType.FLOAT);
    assert.deepEqual(t.dims, [2n, 1n]);
    assert.deepEqual(Array.from(t.rawData.slice(0, 4)), [0, 0, 0xc0, 0x3f]); // 1.5f = 0x3fc00000
    assert.deepEqual(tensorValues(t), [1.5, -2]);
    assert.deepEqual(tensorValues(tensor("i", BigInt64Array.from([-1n, 7n]), [2])), [-1n, 7n]);
    assert.throws(() => tensor("w", new Float32Array(3), [2, 2]), /dims \[2, 2\] hold 4 elements, data has 3/);
  });
});
