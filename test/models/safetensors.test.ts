/**
 * safetensors reader/writer and model-directory loading errors: each names the file and the tensor.
 * Run: node --import tsx --test test/models/safetensors.test.ts
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { initBackend, loadModel, modelTensors, parseSafetensors, readSafetensors, saveModel, serializeSafetensors, writeSafetensors } from "../../models/index.js";
import { FIXTURES } from "./helpers.js";
import { RpcError } from "../../lib/errors.js";

const dir = mkdtempSync(join(tmpdir(), "sppo-st-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A safetensors buffer with one tensor of the given dtype and raw bytes, built by hand. */
function handMade(name: string, dtype: string, shape: number[], bytes: Uint8Array): Buffer {
  const header = Buffer.from(JSON.stringify({ [name]: { dtype, shape, data_offsets: [0, bytes.length] } }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  return Buffer.concat([len, header, Buffer.from(bytes)]);
}

/** A copy of a fixture directory whose model.safetensors is replaced by `edit(tensors)`. */
function editedFixture(family: string, edit: (t: Map<string, { shape: number[]; data: Float32Array | Int32Array }>) => void): string {
  const out = mkdtempSync(join(dir, `${family}-`));
  copyFileSync(join(FIXTURES, family, "config.json"), join(out, "config.json"));
  const tensors = readSafetensors(join(FIXTURES, family, "model.safetensors"));
  edit(tensors);
  writeSafetensors(join(out, "model.safetensors"), tensors);
  return out;
}

describe("safetensors", () => {
  it("round-trips F32 and I32 with metadata, 8-byte aligned", () => {
    const tensors = new Map([
      ["a.weight", { shape: [2, 3], data: new Float32Array([1, -2, 3.5, 4, 5, 6e-8]) }],
      ["b", { shape: [3], data: new Int32Array([7, -8, 9]) }],
    ]);
    const buf = serializeSafetensors(tensors);
    assert.equal((8 + Number(buf.readBigUInt64LE(0))) % 8, 0);
    const back = parseSafetensors(buf);
    assert.deepEqual(back.get("a.weight"), tensors.get("a.weight"));
    assert.deepEqual(back.get("b"), tensors.get("b"));
  });

  it("reads F16 and BF16 (hand-encoded values)", () => {
    // F16: 1.0 = 0x3c00, -2.0 = 0xc000, 0.5 = 0x3800, 65504 = 0x7bff, smallest subnormal = 0x0001.
    const f16 = new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001]).buffer);
    assert.deepEqual(Array.from(parseSafetensors(handMade("h", "F16", [5], f16)).get("h")!.data), [1, -2, 0.5, 65504, 2 ** -24]);
    // BF16: the top 16 bits of float32: 1.0 = 0x3f80, -3.0 = 0xc040, 0.15625 = 0x3e20.
    const bf16 = new Uint8Array(new Uint16Array([0x3f80, 0xc040, 0x3e20]).buffer);
    assert.deepEqual(Array.from(parseSafetensors(handMade("b", "BF16", [3], bf16)).get("b")!.data), [1, -3, 0.15625]);
  });

  it("names the file and tensor on truncation, bad sizes and unsupported dtypes", () => {
    const good = serializeSafetensors(new Map([["w", { shape: [4], data: new Float32Array(4) }]]));
    assert.throws(() => parseSafetensors(good.subarray(0, good.length - 3), "m.safetensors"), (e: Error) => RpcError.is(e, "model-format") && /m\.safetensors: truncated: tensor w/.test(e.message));
    assert.throws(() => parseSafetensors(good.subarray(0, 20), "m.safetensors"), /m\.safetensors: truncated: header/);
    assert.throws(() => parseSafetensors(good.subarray(0, 5), "m.safetensors"), /m\.safetensors: truncated/);
    assert.throws(() => parseSafetensors(handMade("x", "F32", [3], new Uint8Array(8)), "m.safetensors"), /tensor x: 8 bytes for shape \[3\] of F32, expected 12/);
    assert.throws(() => parseSafetensors(handMade("q", "I8", [2], new Uint8Array(2)), "m.safetensors"), /tensor q: dtype I8 is not supported/);
  });
});

describe("model directories", () => {
  it("save → load keeps every parameter and the config", async () => {
    await initBackend("cpu");
    const { model } = loadModel(join(FIXTURES, "llama"));
    const out = join(dir, "saved-llama");
    saveModel(out, model);
    const again = loadModel(out);
    assert.deepEqual(again.model.config, model.config);
    const a = modelTensors(model);
    const b = modelTensors(again.model);
    assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
    for (const [name, t] of a) assert.deepEqual(b.get(name), t, name);
    assert.equal(JSON.parse(readFileSync(join(out, "config.json"), "utf8")).architectures[0], "LlamaForCausalLM");
    model.dispose();
    again.model.dispose();
  });

  it("a missing tensor is named", () => {
    const d = editedFixture("gpt2", (t) => t.delete("transformer.h.1.mlp.c_fc.bias"));
    assert.throws(() => loadModel(d), (e: Error) => RpcError.is(e, "model-format") && e.message.includes("model.safetensors: tensor transformer.h.1.mlp.c_fc.bias is missing"));
  });

  it("a mismatched shape is named", () => {
    const d = editedFixture("llama", (t) => t.set("model.layers.0.self_attn.k_proj.weight", { shape: [32, 32], data: new Float32Array(32 * 32) }));
    assert.throws(() => loadModel(d), /tensor model\.layers\.0\.self_attn\.k_proj\.weight has shape \[32,32\], config\.json implies \[16,32\]/);
  });

  it("an unexpected tensor and an integer dtype are named", () => {
    const extra = editedFixture("gpt2", (t) => t.set("transformer.h.7.ln_1.weight", { shape: [32], data: new Float32Array(32) }));
    assert.throws(() => loadModel(extra), /tensor transformer\.h\.7\.ln_1\.weight is not a parameter/);
    const ints = editedFixture("gpt2", (t) => t.set("transformer.ln_f.bias", { shape: [32], data: new Int32Array(32) }));
    assert.throws(() => loadModel(ints), /tensor transformer\.ln_f\.bias has an integer dtype/);
  });

  it("a truncated weights file and a bad config are named", () => {
    const d = editedFixture("gpt2", () => {});
    const path = join(d, "model.safetensors");
    const buf = readFileSync(path);
    writeFileSync(path, buf.subarray(0, buf.length - 100));
    assert.throws(() => loadModel(d), (e: Error) => e.message.startsWith(`${path}: truncated: tensor `));
    writeFileSync(join(d, "config.json"), JSON.stringify({ model_type: "bert" }));
    assert.throws(() => loadModel(d), /config\.json: model_type "bert" is not supported/);
    writeFileSync(join(d, "config.json"), JSON.stringify({ model_type: "gpt2", n_embd: 30, n_head: 4 }));
    assert.throws(() => loadModel(d), /n_embd 30 is not divisible by n_head 4/);
  });

  it("GPT-2 checkpoints without the transformer. prefix and with attention-mask buffers load", async () => {
    await initBackend("cpu");
    const d = editedFixture("gpt2", (t) => {
      for (const name of [...t.keys()]) {
        t.set(name.replace(/^transformer\./, ""), t.get(name)!);
        t.delete(name);
      }
      t.set("h.0.attn.bias", { shape: [1], data: new Float32Array(1) });
    });
    const { model } = loadModel(d);
    assert.ok(model.params.has("transformer.h.0.attn.c_attn.weight"));
    model.dispose();
  });
});
