/**
 * The commands as a user runs them: `sppo export` writes a file that a fresh onnxruntime session runs with the tfjs
 * engine's logits; `sppo sample` / `sppo score` run on onnxruntime by default, say so in --json, and agree with
 * `--engine tfjs` (sample) and the tfjs scorer (score). The model directory is the tiny GPT-2 fixture plus a
 * word-level tokenizer made here.
 * Run: node --import tsx --test test/models/onnx/cli.test.ts
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import * as tf from "@tensorflow/tfjs";
import { Command } from "commander";
import * as ort from "onnxruntime-node";
import { register as registerExport } from "../../../cli/commands/export.js";
import { modelMetadata, parseModel } from "../../../lib/onnx/index.js";
import { initBackend, loadModel, scoreText } from "../../../models/index.js";
import { exportPolicy } from "../../../models/onnx/index.js";
import { FIXTURES, maxAbsDiff, readExpected } from "../helpers.js";
import { fullFeeds } from "./helpers.js";
import { RpcError } from "../../../lib/errors.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const BIN = join(ROOT, "bin", "sppo.mjs");
const run = promisify(execFile);
const sppo = async (...args: string[]) => (await run(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: "utf8" })).stdout;

let work: string;
let modelDir: string;

before(async () => {
  await initBackend("cpu");
  work = mkdtempSync(join(tmpdir(), "sppo-onnx-cli-"));
  // The GPT-2 fixture (vocab 61, BOS 0, EOS 1) with a word-level tokenizer: <bos>, <eos>, <unk>, w3 … w60.
  modelDir = join(work, "policy");
  mkdirSync(modelDir);
  for (const f of ["config.json", "model.safetensors"]) copyFileSync(join(FIXTURES, "gpt2", f), join(modelDir, f));
  const specials = ["<bos>", "<eos>", "<unk>"];
  const vocab = Object.fromEntries([...specials, ...Array.from({ length: 58 }, (_, i) => `w${i + 3}`)].map((w, i) => [w, i]));
  const tokenizer = {
    version: "1.0",
    added_tokens: specials.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: "Whitespace" },
    post_processor: null,
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "<unk>", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
  };
  writeFileSync(join(modelDir, "tokenizer.json"), JSON.stringify(tokenizer));
  writeFileSync(join(modelDir, "tokenizer_config.json"), JSON.stringify({ bos_token: "<bos>", eos_token: "<eos>" }));
});

after(() => {
  rmSync(work, { recursive: true, force: true });
});

describe("sppo export", () => {
  it("writes a file a fresh onnxruntime session runs with the tfjs logits (and PyTorch's)", async () => {
    const file = join(work, "out", "gpt2.onnx");
    const report = JSON.parse(await sppo("export", "--model", join(FIXTURES, "gpt2"), "--out", file, "--json"));
    assert.equal(report.file, file);
    assert.equal(report.kind, "causal-lm");
    assert.deepEqual(report.outputs, ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]);
    const { model } = loadModel(join(FIXTURES, "gpt2"));
    const expected = readExpected("gpt2");
    const session = await ort.InferenceSession.create(file); // a fresh session from the file alone
    assert.deepEqual(session.inputNames, report.inputs);
    const onnx = (await session.run(fullFeeds(model.config, expected.ids))).logits.data as Float32Array;
    const ids = tf.tensor2d(expected.ids, undefined, "int32");
    const { logits } = model.forward(ids);
    assert.ok(maxAbsDiff(onnx, logits.dataSync()) < 1e-4);
    assert.ok(maxAbsDiff(onnx, expected.logits) < 1e-4);
    tf.dispose([ids, logits]);
    await session.release();
    model.dispose();
    const meta = modelMetadata(parseModel(readFileSync(file)));
    assert.equal(JSON.parse(meta["sppo.config"]).n_embd, 32);
  });

  it("exportPolicy writes the Llama fixture; a bad directory is a user-facing error", async () => {
    const file = join(work, "llama.onnx");
    const result = exportPolicy(join(FIXTURES, "llama"), file);
    const session = await ort.InferenceSession.create(file);
    const expected = readExpected("llama");
    const { model } = loadModel(join(FIXTURES, "llama"));
    const out = (await session.run(fullFeeds(model.config, expected.ids))).logits.data as Float32Array;
    assert.ok(maxAbsDiff(out, expected.logits) < 1e-4);
    assert.equal(result.bytes, statSync(file).size);
    await session.release();
    model.dispose();
    // The command in-process (a spawn costs seconds): a bad directory is a user-facing error, printed as one line.
    const program = new Command("sppo").exitOverride();
    registerExport(program);
    await assert.rejects(program.parseAsync(["export", "--model", join(work, "nothing"), "--out", join(work, "x.onnx")], { from: "user" }), (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.match(err.message, /nothing\/config\.json: cannot read it/);
      assert.equal(err.userFacing, true);
      return true;
    });
  });
});

describe("sppo sample / sppo score", () => {
  it("run on onnxruntime by default, say so, and agree with the tfjs engine", async () => {
    const sampleArgs = ["sample", "--model", modelDir, "--prompt", "w5 w7 w9", "-k", "3", "--seed", "4", "--temperature", "0.8", "--max-new-tokens", "6", "--json"];
    const scoreArgs = ["score", "--model", modelDir, "--prompt", "w5 w7", "--response", "w11 w12 w13", "--json"];
    const [onnxSample, tfjsSample, onnxScore] = await Promise.all([
      sppo(...sampleArgs),
      sppo(...sampleArgs, "--engine", "tfjs", "--backend", "cpu"),
      sppo(...scoreArgs),
    ]).then((outs) => outs.map((o) => JSON.parse(o)));
    const loaded = loadModel(modelDir);
    const [tfjsScore] = scoreText(loaded, [{ prompt: "w5 w7", response: "w11 w12 w13" }]);
    loaded.model.dispose();
    assert.equal(onnxSample.engine, "onnxruntime");
    assert.equal(tfjsSample.engine, "tfjs/cpu");
    assert.equal(onnxSample.samples.length, 3);
    for (const [i, s] of (onnxSample.samples as { tokenIds: number[]; logprob: number; text: string }[]).entries()) {
      assert.deepEqual(s.tokenIds, tfjsSample.samples[i].tokenIds);
      assert.equal(s.text, tfjsSample.samples[i].text);
      assert.ok(Math.abs(s.logprob - tfjsSample.samples[i].logprob) < 1e-4);
    }
    assert.equal(onnxScore.engine, "onnxruntime");
    assert.equal(onnxScore.tokens, 4); // three words and EOS
    assert.ok(Math.abs(onnxScore.logprob - tfjsScore.logprob) < 1e-4, `${onnxScore.logprob} vs ${tfjsScore.logprob}`);
  });
});
