/**
 * Tokenizer, chat template and text-level sampling/scoring on the default policy (assets/policy), and the
 * `sppo sample` / `sppo score` commands end to end.
 * Run: node --import tsx --test test/models/text.test.ts
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { encodePrompt, initBackend, loadModel, PolicyTokenizer, sampleText, scoreText } from "../../models/index.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const POLICY = join(ROOT, "assets", "policy");

describe("tokenizer", () => {
  const vocab = Object.fromEntries(["<pad>", "<bos>", "<eos>", "<sep>", "<unk>", "the", "cat", "is", "kind", ".", ","].map((w, i) => [w, i]));
  const json = {
    version: "1.0",
    added_tokens: ["<pad>", "<bos>", "<eos>", "<sep>", "<unk>"].map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: "Lowercase" },
    pre_tokenizer: { type: "Whitespace" },
    post_processor: null,
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "<unk>", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
  };
  const config = {
    bos_token: "<bos>",
    eos_token: { content: "<eos>" },
    pad_token: "<pad>",
    chat_template: "{{ bos_token }}{% for m in messages %}{{ ' ' + m['content'] }}{% endfor %}{% if add_generation_prompt %}{{ ' <sep>' }}{% endif %}",
  };

  it("encodes words, special tokens and unknowns; decodes with cleanup", () => {
    const tok = new PolicyTokenizer(json, config);
    assert.deepEqual([tok.bosId, tok.eosId, tok.padId], [1, 2, 0]);
    assert.deepEqual(tok.encode("The cat is KIND. <eos>"), [5, 6, 7, 8, 9, 2]);
    assert.deepEqual(tok.encode("the dog"), [5, 4]);
    assert.equal(tok.decode([5, 6, 7, 8, 10, 8, 9, 2]), "the cat is kind, kind.");
  });

  it("renders the chat template (no code from the directory runs; jinja is interpreted)", () => {
    const tok = new PolicyTokenizer(json, config);
    assert.equal(tok.formatPrompt("the cat"), "<bos> the cat <sep>");
    assert.deepEqual(encodePrompt(tok, "the cat"), [1, 5, 6, 3]);
    const plain = new PolicyTokenizer(json, { bos_token: "<bos>" });
    assert.deepEqual(encodePrompt(plain, "the cat"), [1, 5, 6]);
  });
});

describe("default policy", () => {
  it("samples on-subject text; a sampled response's text scores its sampled log-prob", async () => {
    await initBackend("wasm");
    const loaded = loadModel(POLICY);
    const [samples] = sampleText(loaded, ["describe the garden."], { k: 8, seed: 11, maxNewTokens: 24 });
    const again = sampleText(loaded, ["describe the garden."], { k: 8, seed: 11, maxNewTokens: 24 })[0];
    assert.deepEqual(again.map((s) => s.text), samples.map((s) => s.text));
    // A small pretrained policy at temperature 1 strays now and then (~5% when it was made): most must be on-subject.
    const onSubject = samples.filter((s) => /\bgarden\b/.test(s.text)).length;
    assert.ok(onSubject >= 6, `only ${onSubject}/8 mention the garden: ${samples.map((s) => s.text).join(" | ")}`);
    for (const s of samples) {
      assert.ok(s.finished, `did not stop: ${s.text}`);
      const [score] = scoreText(loaded, [{ prompt: "describe the garden.", response: s.text }]);
      assert.equal(score.tokens, s.tokenIds.length);
      assert.ok(Math.abs(score.logprob - s.logprob) < 1e-3, `${s.text}: score ${score.logprob} vs sampled ${s.logprob}`);
    }
    loaded.model.dispose();
  });

  it("sppo sample --json and sppo score --json agree", () => {
    const bin = join(ROOT, "bin", "sppo.mjs");
    const sampled = JSON.parse(
      execFileSync(process.execPath, [bin, "sample", "--prompt", "tell me about the ship.", "-k", "2", "--seed", "5", "--temperature", "0.7", "--top-p", "0.9", "--json"], { encoding: "utf8" }),
    );
    assert.equal(sampled.samples.length, 2);
    assert.equal(typeof sampled.engine, "string"); // tfjs/<backend>, or onnxruntime where models/onnx is the default
    const s = sampled.samples[0];
    const scored = JSON.parse(execFileSync(process.execPath, [bin, "score", "--prompt", "tell me about the ship.", "--response", s.text, "--json"], { encoding: "utf8" }));
    assert.equal(scored.tokens, s.tokens);
    assert.ok(Math.abs(scored.logprob - s.logprob) < 1e-3, `score ${scored.logprob} vs sample ${s.logprob}`);
    assert.throws(() => execFileSync(process.execPath, [bin, "sample", "--prompt", "x", "--top-p", "2"], { stdio: "pipe" }), /--top-p must be/);
  });
});
