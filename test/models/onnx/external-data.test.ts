/**
 * ONNX past 2 GiB: weights as external data. An exported graph with its weights in FILE.onnx.data runs in a fresh
 * onnxruntime session (from the file alone) with the PyTorch fixture's logits; the engine's sessions map an F32
 * checkpoint in place (no weights file written), convert a sharded BF16 checkpoint into a weights file removed at
 * dispose, in the OS's temporary folder unless one is named (and folders crashed processes left are removed), and run float16 weight matrices (engine.onnx.dtype) within a bounded log-prob difference.
 * Run: node --import tsx --test test/models/onnx/external-data.test.ts
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as ort from "onnxruntime-node";
import { initBackend, loadModel, paramShapes, saveModel, scorePairs } from "../../../models/index.js";
import { createOrtPolicy, exportPolicy, writeExternalWeights } from "../../../models/onnx/index.js";
import { FIXTURES, maxAbsDiff, readExpected } from "../helpers.js";
import { fullFeeds } from "./helpers.js";

let work: string;
before(async () => {
  await initBackend("cpu");
  work = mkdtempSync(join(tmpdir(), "sppo-onnx-ext-"));
});
after(() => rmSync(work, { recursive: true, force: true }));

const PAIRS = [
  { prompt: [0, 5, 7], response: [9, 11, 3, 1] },
  { prompt: [0, 2], response: [13, 1] },
  { prompt: [0, 4, 6, 8, 10], response: [12, 14, 16] },
];

describe("export with external data", () => {
  for (const family of ["gpt2", "llama"]) {
    it(`${family}: FILE.onnx + FILE.onnx.data run in a fresh session with the PyTorch fixture's logits`, async () => {
      const file = join(work, family, "model.onnx");
      const result = exportPolicy(join(FIXTURES, family), file, { externalData: true });
      assert.equal(result.externalData, "model.onnx.data");
      const dataBytes = statSync(join(work, family, "model.onnx.data")).size;
      assert.equal(result.externalBytes, dataBytes);
      assert.ok(statSync(file).size < dataBytes / 4, "the graph file holds no weights");
      const inline = exportPolicy(join(FIXTURES, family), join(work, family, "inline.onnx"));
      assert.equal(inline.externalData, undefined);

      const expected = readExpected(family);
      const { model } = loadModel(join(FIXTURES, family));
      const session = await ort.InferenceSession.create(file); // external data found beside the file, as any runtime does
      const inlineSession = await ort.InferenceSession.create(inline.file);
      const feeds = fullFeeds(model.config, expected.ids);
      const logits = (await session.run(feeds)).logits.data as Float32Array;
      assert.ok(maxAbsDiff(logits, expected.logits) < 1e-4);
      assert.deepEqual(logits, (await inlineSession.run(feeds)).logits.data, "same logits as the self-contained file");
      await session.release();
      await inlineSession.release();
      model.dispose();
    });
  }

  it("float16 weights are written as external data at about half the size, and run", async () => {
    const file = join(work, "half", "model.onnx");
    const result = exportPolicy(join(FIXTURES, "llama"), file, { dtype: "float16", externalData: true });
    const full = statSync(join(work, "llama", "model.onnx.data")).size;
    assert.ok(result.externalBytes! < full * 0.6, `${result.externalBytes} vs ${full}`);
    assert.throws(() => exportPolicy(join(FIXTURES, "llama"), join(work, "x.onnx"), { dtype: "float16", externalData: false }), /float16 weights are written as external data/);
    const expected = readExpected("llama");
    const { model } = loadModel(join(FIXTURES, "llama"));
    const session = await ort.InferenceSession.create(file);
    const logits = (await session.run(fullFeeds(model.config, expected.ids))).logits.data as Float32Array;
    const diff = maxAbsDiff(logits, expected.logits);
    assert.ok(diff > 0 && diff < 0.05, `max |Δlogit| float16 vs PyTorch float32: ${diff}`);
    await session.release();
    model.dispose();
  });
});

describe("engine sessions over external data", () => {
  it("an F32 checkpoint is mapped in place: no weights file is written", async () => {
    const weightsDir = join(work, "scratch-f32");
    mkdirSync(weightsDir);
    const policy = await createOrtPolicy(join(FIXTURES, "gpt2"), { intraOpThreads: 1, prepare: ["sample", "score"], weightsDir });
    assert.deepEqual(readdirSync(weightsDir), []);
    const { model } = loadModel(join(FIXTURES, "gpt2"));
    const want = scorePairs(model, PAIRS);
    const got = await policy.score(PAIRS);
    for (const [i, w] of want.entries()) assert.ok(Math.abs(got[i].logprob - w.logprob) < 1e-4);
    await policy.dispose();
    model.dispose();
  });

  it("a sharded BF16 checkpoint is converted into a weights file that lives as long as its sessions", async () => {
    const { model } = loadModel(join(FIXTURES, "llama"));
    const dir = join(work, "llama-bf16");
    saveModel(dir, model, undefined, { dtype: "bfloat16", maxShardBytes: 30_000 });
    copyFileSync(join(FIXTURES, "llama", "config.json"), join(dir, "config.json"));
    model.dispose();
    assert.ok(readdirSync(dir).includes("model.safetensors.index.json"));
    const rounded = loadModel(dir).model; // tfjs over the same bf16-rounded values
    const weightsDir = join(work, "scratch-bf16");
    mkdirSync(weightsDir);
    // A folder a crashed process left (its pid is gone) is removed; one of a live process is not.
    const dead = spawnSync(process.execPath, ["-e", ""]).pid;
    mkdirSync(join(weightsDir, `sppo-onnx-${dead}-left`));
    mkdirSync(join(weightsDir, `sppo-onnx-${process.ppid}-alive`));
    const policy = await createOrtPolicy(dir, { intraOpThreads: 1, prepare: ["score"], weightsDir });
    const own = () => readdirSync(weightsDir).filter((n) => n.startsWith(`sppo-onnx-${process.pid}-`));
    assert.deepEqual(readdirSync(weightsDir).filter((n) => !n.startsWith(`sppo-onnx-${process.pid}-`)), [`sppo-onnx-${process.ppid}-alive`]);
    assert.equal(own().length, 1, "one weights folder while the sessions live");
    const want = scorePairs(rounded, PAIRS);
    const got = await policy.score(PAIRS);
    for (const [i, w] of want.entries()) assert.ok(Math.abs(got[i].logprob - w.logprob) < 1e-4, `${got[i].logprob} vs ${w.logprob}`);
    // A refresh builds the next version's file; the old one goes when its sessions do.
    await policy.refresh(dir);
    assert.equal(own().length, 1);
    await policy.dispose();
    assert.deepEqual(own(), [], "disposed: the weights file is gone");
    rounded.dispose();
  });

  it("with no folder named (engine.onnx.weightsDir \"\"), the weights file goes to the OS's temporary folder, not /dev/shm", () => {
    const { model } = loadModel(join(FIXTURES, "llama"));
    const weights = new Map(paramShapes(model.config).map(([name]) => [name, { shape: model.params.get(name)!.shape, data: model.params.get(name)!.dataSync() as Float32Array }]));
    const written = writeExternalWeights(model.config, weights, "float32", "");
    try {
      assert.equal(dirname(written.folder), tmpdir());
      assert.ok(statSync(join(written.folder, "weights.bin")).size >= written.bytes);
    } finally {
      written.release();
      model.dispose();
    }
  });

  it("engine.onnx.dtype float16: the same samples' log-probs within a bounded difference, and different from float32", async () => {
    const dir = join(FIXTURES, "gpt2");
    const f32 = await createOrtPolicy(dir, { intraOpThreads: 1, prepare: ["score"] });
    const f16 = await createOrtPolicy(dir, { intraOpThreads: 1, prepare: ["sample", "score"], dtype: "float16" });
    const a = await f32.score(PAIRS);
    const b = await f16.score(PAIRS);
    const diffs = a.map((s, i) => Math.abs(s.logprob - b[i].logprob));
    assert.ok(Math.max(...diffs) < 0.05, `|Δ logprob| ${diffs}`);
    assert.ok(Math.max(...diffs) > 0, "float16 weights change the numbers");
    const [sample] = await f16.sample([[0, 5, 7]], { seed: 3, maxNewTokens: 5 });
    assert.equal(sample.tokenIds.length, 5);
    await assert.rejects(createOrtPolicy(dir, { dtype: "bfloat16" as "float16" }), /dtype must be "float32" or "float16", got bfloat16/);
    await f32.dispose();
    await f16.dispose();
  });
});
