/**
 * Checkpoints at any size: sharded checkpoints (model.safetensors.index.json) load and round-trip, weights are read
 * tensor by tensor with positioned reads (a lowered read limit exercises the path a > 2 GiB file takes), bfloat16 is
 * written with PyTorch's rounding, and an independent PyTorch reader written against the format's specification
 * (scripts/torch/read_checkpoint.py) reads what we write.
 * Run: node --import tsx --test test/models/checkpoint-files.test.ts
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { createRequire, syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  CheckpointFiles,
  createModel,
  floatToBf16,
  floatToHalf,
  gpt2Config,
  initBackend,
  llamaConfig,
  loadModel,
  modelTensors,
  SafetensorsFile,
  saveModel,
  writeCheckpointFiles,
  writeSafetensors,
} from "../../models/index.js";

const fs = createRequire(import.meta.url)("node:fs") as typeof import("node:fs");
const root = mkdtempSync(join(tmpdir(), "sppo-ckpt-"));
const PYTHON = "/usr/bin/python3";
const READER = join(import.meta.dirname, "..", "..", "scripts", "torch", "read_checkpoint.py");

before(async () => {
  await initBackend("cpu");
});
after(() => rmSync(root, { recursive: true, force: true }));

/** Every readSync call (length, position) made while `fn` runs. */
function recordReads<T>(fn: () => T): { result: T; reads: { length: number; position: number }[] } {
  const original = fs.readSync;
  const reads: { length: number; position: number }[] = [];
  fs.readSync = ((fd: number, buffer: NodeJS.ArrayBufferView, offset: number, length: number, position: number) => {
    reads.push({ length, position });
    return original(fd, buffer, offset, length, position);
  }) as typeof fs.readSync;
  syncBuiltinESMExports(); // the models' `import { readSync } from "node:fs"` sees the spy
  try {
    return { result: fn(), reads };
  } finally {
    fs.readSync = original;
    syncBuiltinESMExports();
  }
}

const llama = llamaConfig({ vocab_size: 64, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 32 });

describe("sharded checkpoints", () => {
  it("save past maxShardBytes → shards + index in transformers' layout; they load and round-trip exactly", () => {
    const model = createModel(llama, undefined, 7);
    const dir = join(root, "sharded");
    saveModel(dir, model, undefined, { maxShardBytes: 20_000 });
    const files = readdirSync(dir).sort();
    const shards = files.filter((f) => f.endsWith(".safetensors"));
    assert.ok(shards.length >= 3, `expected several shards, got ${files}`);
    for (const [i, f] of shards.entries()) assert.equal(f, `model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`);
    assert.ok(!files.includes("model.safetensors"));
    const index = JSON.parse(readFileSync(join(dir, "model.safetensors.index.json"), "utf8"));
    const params = modelTensors(model);
    assert.deepEqual(Object.keys(index.weight_map).sort(), [...params.keys()].sort());
    let total = 0;
    for (const t of params.values()) total += t.data.length * 4;
    assert.equal(index.metadata.total_size, total);
    for (const f of shards) assert.ok(statSync(join(dir, f)).size - 8 <= 20_000 + 4096, `${f} is over the limit`); // header aside

    const again = loadModel(dir);
    for (const [name, t] of params) assert.deepEqual(again.model.params.get(name)!.dataSync(), t.data, name);
    // Saved again in one file, the shards and the index go: the directory loads as written.
    saveModel(dir, again.model);
    assert.deepEqual(readdirSync(dir).sort(), ["config.json", "model.safetensors"]);
    const single = loadModel(dir);
    for (const [name, t] of params) assert.deepEqual(single.model.params.get(name)!.dataSync(), t.data, name);
    for (const m of [model, again.model, single.model]) m.dispose();
  });

  it("an index naming a file outside the directory, or a tensor its shard lacks, is refused with the file named", () => {
    const dir = join(root, "bad-index");
    const model = createModel(llama, undefined, 1);
    saveModel(dir, model, undefined, { maxShardBytes: 20_000 });
    model.dispose();
    const path = join(dir, "model.safetensors.index.json");
    const index = JSON.parse(readFileSync(path, "utf8"));
    fs.writeFileSync(path, JSON.stringify({ ...index, weight_map: { ...index.weight_map, "model.norm.weight": "../elsewhere.safetensors" } }));
    assert.throws(() => loadModel(dir), /weight_map\.model\.norm\.weight: "\.\.\/elsewhere\.safetensors" leads outside the directory/);
    const first = index.weight_map["model.embed_tokens.weight"];
    assert.notEqual(first, index.weight_map["model.norm.weight"]);
    fs.writeFileSync(path, JSON.stringify({ ...index, weight_map: { ...index.weight_map, "model.norm.weight": first } }));
    assert.throws(() => loadModel(dir), (e: Error) => e.message.includes(`tensor model.norm.weight is listed in ${join(dir, first)}, which does not hold it`));
  });

  it("PyTorch, reading by the specification alone, sees the same tensors (sharded and bfloat16)", (t) => {
    const model = createModel(gpt2Config({ vocab_size: 40, n_positions: 16, n_embd: 16, n_layer: 2, n_head: 2 }), undefined, 3);
    const params = modelTensors(model);
    const cases = [["float32", 8_000], ["bfloat16", 1e9]] as const;
    const dirs = cases.map(([dtype, maxShardBytes]) => {
      const dir = join(root, `torch-${dtype}`);
      saveModel(dir, model, undefined, { dtype, maxShardBytes });
      return dir;
    });
    let lines: string[];
    try {
      lines = execFileSync(PYTHON, [READER, ...dirs], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim().split("\n");
    } catch (err) {
      const why = String((err as { stderr?: string }).stderr ?? err);
      model.dispose();
      if (!existsSync(PYTHON) || why.includes("No module named 'torch'")) return t.skip("no /usr/bin/python3 with torch");
      throw err;
    }
    for (const [i, [dtype]] of cases.entries()) {
      const dir = dirs[i];
      const read = JSON.parse(lines[i]);
      assert.equal(read.files.length > 1, dtype === "float32");
      assert.deepEqual(Object.keys(read.tensors).sort(), [...params.keys()].sort());
      const loaded = loadModel(dir).model;
      for (const [name, t] of loaded.params) {
        const mine = t.dataSync() as Float32Array;
        const theirs = read.tensors[name];
        assert.equal(theirs.dtype, dtype === "float32" ? "F32" : "BF16", name);
        assert.deepEqual(theirs.shape, t.shape, name);
        assert.deepEqual(theirs.first, Array.from(mine.slice(0, 4)), name);
        const sum = mine.reduce((a, b) => a + b, 0);
        assert.ok(Math.abs(sum - theirs.sum) < 1e-4, `${name}: ${sum} vs ${theirs.sum}`);
      }
      loaded.dispose();
      assert.equal(JSON.parse(readFileSync(join(dir, "config.json"), "utf8")).torch_dtype, dtype);
    }
    model.dispose();
  });
});

describe("reading tensor by tensor", () => {
  it("loading reads each tensor with its own positioned reads, never the whole file", () => {
    const model = createModel(llama, undefined, 5);
    const dir = join(root, "reads");
    saveModel(dir, model);
    model.dispose();
    const fileBytes = statSync(join(dir, "model.safetensors")).size;
    const f = SafetensorsFile.open(join(dir, "model.safetensors"));
    const ranges = [...f.entries.values()].map((e) => [e.byteOffset, e.byteOffset + e.byteLength]);
    const largest = Math.max(...ranges.map(([a, b]) => b - a));
    f.close();
    const { result, reads } = recordReads(() => loadModel(dir));
    result.model.dispose();
    const tensorReads = reads.filter((r) => r.position >= ranges[0][0] || ranges.some(([a]) => r.position === a));
    assert.equal(tensorReads.length, ranges.length, "one read per tensor");
    for (const r of tensorReads) assert.ok(ranges.some(([a, b]) => r.position >= a && r.position + r.length <= b), `read at ${r.position} crosses a tensor's bounds`);
    assert.ok(Math.max(...reads.map((r) => r.length)) <= largest && largest < fileBytes / 4);
  });

  it("a file over a lowered read limit loads in pieces, every value intact (the path of a > 2 GiB file)", () => {
    const big = new Float32Array(50_000).map((_, i) => Math.sin(i) * 100);
    const path = join(root, "pieces.safetensors");
    writeSafetensors(path, new Map([["big", { shape: [250, 200], data: big }], ["small", { shape: [3], data: new Float32Array([1, 2, 3]) }]]));
    const limit = 4096;
    assert.ok(statSync(path).size > 40 * limit);
    const file = SafetensorsFile.open(path, { chunkBytes: limit });
    const { result, reads } = recordReads(() => file.read("big"));
    file.close();
    assert.deepEqual(result.data, big);
    assert.equal(reads.length, Math.ceil((big.length * 4) / limit));
    assert.ok(reads.every((r) => r.length <= limit));
  });
});

describe("float formats", () => {
  it("bfloat16 and float16 rounding match PyTorch's (hand-checked bit patterns)", () => {
    // torch.tensor(v).to(torch.bfloat16): ties go to even; past the range is infinity.
    const bf = [1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, 3.4e38, -2.5].map(floatToBf16);
    assert.deepEqual(bf, [0x3f80, 0x3f80, 0x3f82, 0x3f81, 0x7f80, 0xc020]);
    assert.equal(floatToBf16(-0), 0x8000);
    assert.ok((floatToBf16(Number.NaN) & 0x7f80) === 0x7f80 && (floatToBf16(Number.NaN) & 0x7f) !== 0);
    // torch.tensor(v).to(torch.float16), subnormals included.
    const half = [65504, 65520, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 1 / 3, -1e-8, 6.1e-5, 0.1].map(floatToHalf);
    assert.deepEqual(half, [0x7bff, 0x7c00, 0x0001, 0x0000, 0x0001, 0x3555, 0x8000, 0x03ff, 0x2e66]);
  });

  it("a bfloat16 checkpoint is half the size and loads as the rounded values", () => {
    const model = createModel(llama, undefined, 9);
    const params = modelTensors(model);
    model.dispose();
    const dir = join(root, "bf16");
    fs.mkdirSync(dir);
    const written = writeCheckpointFiles(dir, params, { dtype: "bfloat16" });
    let values = 0;
    for (const t of params.values()) values += t.data.length;
    assert.equal(written.totalBytes, values * 2);
    const files = CheckpointFiles.open(dir);
    for (const [name, t] of params) {
      const back = files.get(name)!.data;
      const rounded = new Float32Array(new Uint32Array(Array.from(t.data as Float32Array, (x) => floatToBf16(x) << 16)).buffer);
      assert.deepEqual(back, rounded, name);
    }
    assert.ok(files.allStoredAs("BF16", params.keys()));
    files.close();
    assert.ok(!existsSync(join(dir, "model.safetensors.index.json")));
  });
});
