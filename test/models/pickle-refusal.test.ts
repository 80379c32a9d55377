/**
 * Model directories without model.safetensors: pickle-based weights (pytorch_model.bin, *.pt, ...) are refused with a
 * message that says why and how to convert, by both the tfjs loader (loadModel) and the onnxruntime one
 * (readPolicyDir). Run: node --import tsx --test test/models/pickle-refusal.test.ts
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { configToJson, createModel, gpt2Config, loadModel, saveModel } from "../../models/index.js";
import { modelWeightsPath } from "../../models/io.js";
import { readPolicyDir } from "../../models/onnx/source.js";
import { RpcError } from "../../lib/errors.js";

const config = gpt2Config({ vocab_size: 16, n_positions: 8, n_embd: 8, n_layer: 1, n_head: 2 });
/** Bytes that start like a pickle: they are never read, so their content does not matter. */
const PICKLE_BYTES = Buffer.from([0x80, 0x04, 0x95, 0x00, 0x2e]);

let root: string;
before(async () => {
  await tf.setBackend("cpu");
  root = mkdtempSync(join(tmpdir(), "sppo-pickle-"));
});
after(() => rmSync(root, { recursive: true, force: true }));

/** A model directory holding config.json and the given extra files (no model.safetensors). */
function modelDir(name: string, files: string[]): string {
  const dir = join(root, name);
  mkdirSync(dir);
  writeFileSync(join(dir, "config.json"), JSON.stringify(configToJson(config)));
  for (const f of files) writeFileSync(join(dir, f), PICKLE_BYTES);
  return dir;
}

/** Asserts that `fn` throws an RpcError of kind "model-format" whose message matches every pattern. */
function refuses(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(RpcError.is(err, "model-format"), `expected a "model-format" RpcError, got ${err}`);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  });
}

describe("model directories without model.safetensors", () => {
  test("only pytorch_model.bin: refused by both loaders, saying why and how to convert", () => {
    const dir = modelDir("torch-only", ["pytorch_model.bin"]);
    const why = [
      /model\.safetensors: missing; the directory has pytorch_model\.bin, which is a pickle-based file\./,
      /Pickle files can execute arbitrary code when loaded, so they are never loaded\./,
      /Convert the weights to safetensors .*save_pretrained\(dir, safe_serialization=True\)/,
    ];
    refuses(() => loadModel(dir), ...why);
    refuses(() => readPolicyDir(dir), ...why);
  });

  test("every pickle-based file is named (*.pt, *.pth, *.ckpt, *.pkl, sharded pytorch_model-*.bin)", () => {
    const files = ["a.pt", "b.pth", "c.ckpt", "d.pkl", "pytorch_model-00001-of-00002.bin"];
    const dir = modelDir("many", [...files, "README.md"]);
    refuses(() => modelWeightsPath(dir), new RegExp(`has ${files.map((f) => f.replace(/\./g, "\\.")).join(", ")}, which are pickle-based files`));
  });

  test("a broken shard index and an empty directory get their own messages", () => {
    const sharded = modelDir("sharded", ["pytorch_model.bin"]);
    writeFileSync(join(sharded, "model.safetensors.index.json"), "{}");
    refuses(() => loadModel(sharded), /model\.safetensors\.index\.json: weight_map is missing/);
    refuses(() => loadModel(modelDir("bare", [])), /model\.safetensors: missing; a model directory needs its weights as model\.safetensors \(or shards listed by model\.safetensors\.index\.json\) beside config\.json/);
  });

  test("a pickle file beside model.safetensors is ignored: the safetensors weights load", () => {
    const dir = join(root, "both");
    const model = createModel(config, undefined, 3);
    saveModel(dir, model);
    model.dispose();
    writeFileSync(join(dir, "pytorch_model.bin"), PICKLE_BYTES);
    const loaded = loadModel(dir);
    const params = loaded.model.params.size;
    loaded.model.dispose();
    assert.equal(loaded.model.config.vocab_size, 16);
    assert.equal(readPolicyDir(dir).weights.size, params);
  });
});
