/**
 * Backend selection and the wasm kernel fixes of models/backend.ts: re-registered BatchMatMul (transposes, batches,
 * broadcasting) and the added UnsortedSegmentSum (gather's gradient) agree with the cpu backend.
 * Run: node --import tsx --test test/models/backend.test.ts
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { createRng } from "../../lib/rng.js";
import { initBackend, setWasmMatMulFix, wasmFixesInstalled } from "../../models/index.js";
import { maxAbsDiff } from "./helpers.js";

function seeded(shape: number[], seed: number): { shape: number[]; data: Float32Array } {
  const rng = createRng(seed);
  const size = shape.reduce((p, d) => p * d, 1);
  return { shape, data: Float32Array.from({ length: size }, () => rng.normal()) };
}

/** Runs f on cpu then on wasm with the same inputs; returns both outputs. */
async function onBoth(f: () => tf.Tensor): Promise<[Float32Array, Float32Array]> {
  await initBackend("cpu");
  const cpu = tf.tidy(f).dataSync() as Float32Array;
  await initBackend("wasm");
  const wasm = tf.tidy(f).dataSync() as Float32Array;
  return [cpu, wasm];
}

describe("backend selection", () => {
  it("auto picks a native backend where one is installed, else wasm, and says why", async () => {
    const info = await initBackend("auto");
    if (info.name === "wasm") assert.ok(info.skipped.some((s) => s.startsWith("@tensorflow/tfjs-node")), info.skipped.join("; "));
    assert.ok(["tensorflow", "wasm"].includes(info.name));
    const cpu = await initBackend("cpu");
    assert.equal(cpu.name, "cpu");
    assert.equal(tf.getBackend(), "cpu");
  });
});

describe("wasm BatchMatMul fix", () => {
  const cases: [string, number[], number[], boolean, boolean][] = [
    ["2-D, transposeB", [33, 20], [17, 20], false, true],
    ["2-D, transposeA", [20, 33], [20, 17], true, false],
    ["2-D, both", [20, 33], [17, 20], true, true],
    ["batched", [3, 4, 5, 6], [3, 4, 6, 7], false, false],
    ["batched, transposeB", [3, 4, 5, 6], [3, 4, 7, 6], false, true],
    ["batched, transposeA", [6, 6, 5], [6, 6, 7], true, false],
    ["batch broadcast", [1, 5, 6], [4, 6, 3], false, false],
  ];
  for (const [name, sa, sb, ta, tb] of cases) {
    it(`${name} matches cpu`, async () => {
      const a = seeded(sa, 1);
      const b = seeded(sb, 2);
      const t3 = (d: { shape: number[]; data: Float32Array }) => tf.tensor(d.data, d.shape) as unknown as tf.Tensor3D;
      const [cpu, wasm] = await onBoth(() => tf.matMul(t3(a), t3(b), ta, tb));
      assert.ok(wasmFixesInstalled());
      assert.ok(maxAbsDiff(cpu, wasm) < 1e-4, `max diff ${maxAbsDiff(cpu, wasm)}`);
    });
  }

  it("the original kernel can be switched back in and gives the same products", async () => {
    await initBackend("wasm");
    const a = seeded([8, 16], 3);
    const b = seeded([12, 16], 4);
    const run = () => tf.tidy(() => tf.matMul(tf.tensor2d(a.data, [8, 16]), tf.tensor2d(b.data, [12, 16]), false, true).dataSync());
    const fixed = run();
    setWasmMatMulFix(false);
    const original = run();
    setWasmMatMulFix(true);
    assert.ok(maxAbsDiff(fixed, original) < 1e-5);
  });
});

describe("wasm UnsortedSegmentSum (gather's gradient)", () => {
  it("embedding-lookup gradients match cpu", async () => {
    const table = seeded([10, 4], 5);
    const ids = [[1, 3, 3], [9, 0, 1]];
    const up = seeded([2, 3, 4], 6);
    const f = () => tf.grad((t: tf.Tensor) => tf.gather(t, tf.tensor2d(ids, undefined, "int32")).mul(tf.tensor(up.data, up.shape)).sum())(tf.tensor(table.data, table.shape));
    const [cpu, wasm] = await onBoth(f);
    assert.ok(maxAbsDiff(cpu, wasm) < 1e-5);
    // Row 3 is looked up twice: its gradient is the sum of both upstream rows.
    for (let j = 0; j < 4; j++) assert.ok(Math.abs(wasm[3 * 4 + j] - (up.data[4 + j] + up.data[8 + j])) < 1e-5);
    const direct = await onBoth(() => tf.unsortedSegmentSum(tf.tensor2d([[1, 2], [3, 4], [5, 6]]), tf.tensor1d([2, 0, 2], "int32"), 4));
    assert.deepEqual(Array.from(direct[1]), [3, 4, 0, 0, 6, 8, 0, 0]);
  });
});

describe("hand-written GELU gradient", () => {
  it("equals autodiff of the composite formula", async () => {
    const { geluTanh, geluTanhComposite } = await import("../../models/layers.js");
    await initBackend("wasm");
    const x = seeded([3, 7], 9);
    const up = seeded([3, 7], 10);
    const grad = (f: (t: tf.Tensor) => tf.Tensor) => tf.tidy(() => tf.grad((t: tf.Tensor) => f(t).mul(tf.tensor(up.data, up.shape)).sum())(tf.tensor(x.data, x.shape)).dataSync());
    assert.ok(maxAbsDiff(grad(geluTanh), grad(geluTanhComposite)) < 1e-5);
    const value = tf.tidy(() => geluTanh(tf.tensor(x.data, x.shape)).dataSync());
    const reference = tf.tidy(() => geluTanhComposite(tf.tensor(x.data, x.shape)).dataSync());
    assert.ok(maxAbsDiff(value, reference) < 1e-7);
  });
});
