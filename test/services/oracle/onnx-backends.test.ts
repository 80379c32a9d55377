/**
 * The ONNX backends on real models built by scripts/make-default-oracle.ts, checked against the models' arithmetic
 * worked out by hand (fixtures.ts handScore); truncation; dynamic batching; every start-up error; NaN.
 * Run: node --import tsx --test test/services/oracle/onnx-backends.test.ts
 */
import assert from "node:assert/strict";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, RpcError } from "../../../lib/errors.js";
import { DataType, GraphBuilder, serializeModel } from "../../../lib/onnx/index.js";
import { DEFAULT_WEIGHTS, type ScoreWeights } from "../../../scripts/make-default-oracle.js";
import { createOracle } from "../../../services/oracle/create-oracle.js";
import { padBatch } from "../../../services/oracle/model-dir.js";
import { checkedOracle } from "../../../services/oracle/oracle.js";
import { PairwiseOnnxOracle, pairwiseRows } from "../../../services/oracle/pairwise-onnx.js";
import { assertMatrixClose, expectedMatrix, handScore, modelDir, nanModelDir, oracleConfig, tempDir, writeModel } from "./fixtures.js";

const WEIGHTS: ScoreWeights = { good: 1.5, bad: 0.75, onSubject: 1, offSubject: 0.5, positionBias: 0.6 };
const PROMPT = "Tell me about the cat.";
const CANDIDATES = ["the cat is kind and warm.", "the cat is rude.", "the dog is kind , lovely and honest.", "it is a big cat.", "a grim , cold river."];

const batching = { maxBatch: 64, maxWaitMs: 1, maxConcurrentRuns: 1 };
const tmp = tempDir();
after(() => tmp.remove());

describe("padBatch", () => {
  it("concatenates each row's segments, right-pads with the pad id and masks the padding", () => {
    const { ids, mask, dims } = padBatch([[[1, 2], [3]], [[], [70_000], []]], 9);
    assert.deepEqual(dims, [2, 3]);
    assert.deepEqual(Array.from(ids), [1n, 2n, 3n, 70_000n, 9n, 9n]);
    assert.deepEqual(Array.from(mask), [1n, 1n, 1n, 1n, 0n, 0n]);
  });
});

describe("pairwise-onnx", () => {
  let pairwiseDir: string;
  before(() => {
    pairwiseDir = modelDir(tmp.dir, "pairwise", "pairwise", { weights: WEIGHTS });
  });

  it("gives σ(score_i − score_j): the model's position bias cancels", async () => {
    const oracle = checkedOracle(await PairwiseOnnxOracle.load({ modelDir: pairwiseDir, maxCandidates: 8, batching, intraOpThreads: 1 }));
    const { matrix, truncatedTexts } = await oracle.compare(PROMPT, CANDIDATES);
    assert.equal(truncatedTexts, 0);
    assertMatrixClose(matrix, expectedMatrix(PROMPT, CANDIDATES, WEIGHTS));
    assert.deepEqual(oracle.describe(), { backend: "pairwise-onnx", model: "sppo-default-pairwise (constructed, PairRM form)", maxCandidates: 8, pairwise: true });
    await oracle.close();
  });

  it("gives the same matrix with the session on the calling thread (runInWorker false)", async () => {
    const oracle = checkedOracle(await PairwiseOnnxOracle.load({ modelDir: pairwiseDir, maxCandidates: 8, batching, intraOpThreads: 1, runInWorker: false }));
    assertMatrixClose((await oracle.compare(PROMPT, CANDIDATES)).matrix, expectedMatrix(PROMPT, CANDIDATES, WEIGHTS));
    await oracle.close();
  });

  it("feeds PairRM's three segments, so the raw logit is score(first) − score(second) + bias", async () => {
    const oracle = await PairwiseOnnxOracle.load({ modelDir: pairwiseDir, maxCandidates: 8, batching, intraOpThreads: 1 });
    const { rows, pairs } = pairwiseRows(oracle.encoder, oracle.config, PROMPT, CANDIDATES.slice(0, 2));
    assert.deepEqual(pairs, [[0, 1], [1, 0]]);
    const tok = (t: string) => oracle.encoder.tokenId(t);
    // [CLS] <|source|> tell me about the cat . [SEP] [CLS] <|candidate1|> the cat is kind and warm . [SEP] [CLS] <|candidate2|> …
    assert.deepEqual(rows[0].flat().slice(0, 10), ["[CLS]", "<|source|>", "tell", "me", "about", "the", "cat", ".", "[SEP]", "[CLS]"].map(tok));
    assert.equal(rows[0].flat()[10], tok("<|candidate1|>"));
    assert.deepEqual(rows[0][0], rows[1][0]); // the prompt segment is shared
    const logits = await oracle.runDirect(rows);
    const s0 = handScore(PROMPT, CANDIDATES[0], WEIGHTS);
    const s1 = handScore(PROMPT, CANDIDATES[1], WEIGHTS);
    assert.ok(Math.abs(logits[0] - (s0 - s1 + WEIGHTS.positionBias)) < 1e-5);
    assert.ok(Math.abs(logits[1] - (s1 - s0 + WEIGHTS.positionBias)) < 1e-5);
    await oracle.close();
  });

  it("batches the pairs of concurrent requests into shared runs", async () => {
    const oracle = await PairwiseOnnxOracle.load({ modelDir: pairwiseDir, maxCandidates: 8, batching: { maxBatch: 256, maxWaitMs: 5 }, intraOpThreads: 1 });
    const prompts = ["describe the dog.", "what is the river like?", "write about the song.", "tell me about the ship."];
    const sets = prompts.map((p, n) => CANDIDATES.map((c) => c.replace("cat", p.split(" ").at(-1)!.replace(/[.?]/g, "")) + " ".repeat(n)));
    const results = await Promise.all(prompts.map((p, n) => oracle.compare(p, sets[n])));
    for (const [n, r] of results.entries()) assertMatrixClose(r.matrix, expectedMatrix(prompts[n], sets[n], WEIGHTS));
    // 4 requests × 20 ordered pairs, all queued in the same turn: one run.
    assert.deepEqual(oracle.batchStats, { runs: 1, rows: 80, largestBatch: 80 });
    await oracle.close();
  });

  it("truncates the prompt and candidates as PairRM does and counts the truncated texts", async () => {
    const base = { kind: "pairwise", source_max_length: 6, candidate_max_length: 5 };
    const fixedDir = modelDir(tmp.dir, "truncating", "pairwise", { weights: WEIGHTS, config: { ...base, share_unused_source_budget: false } });
    const oracle = checkedOracle(await PairwiseOnnxOracle.load({ modelDir: fixedDir, maxCandidates: 8, batching, intraOpThreads: 1 }));
    // Prompt: [CLS] <|source|> tell me about [SEP] (6 tokens) — "the cat ." is cut, so no subject.
    // "the cat is kind and warm." → [CLS] <|candidate1|> the cat [SEP]; "it is big." → [CLS] <|candidate1|> it is [SEP].
    const candidates = ["the cat is kind and warm.", "it is big."];
    const { matrix, truncatedTexts } = await oracle.compare(PROMPT, candidates);
    assert.equal(truncatedTexts, 3);
    assertMatrixClose(matrix, expectedMatrix("tell me about", ["the cat", "it is"], WEIGHTS));
    await oracle.close();

    // PairRM hands the prompt's unused budget to the candidates: ⌊(20 + 2·5 − 9) / 2⌋ = 10 tokens each.
    const sharedDir = modelDir(tmp.dir, "sharing", "pairwise", { weights: WEIGHTS, config: { ...base, source_max_length: 20 } });
    const sharing = checkedOracle(await PairwiseOnnxOracle.load({ modelDir: sharedDir, maxCandidates: 8, batching, intraOpThreads: 1 }));
    const shared = await sharing.compare(PROMPT, candidates);
    assert.equal(shared.truncatedTexts, 0);
    assertMatrixClose(shared.matrix, expectedMatrix(PROMPT, candidates, WEIGHTS));
    await sharing.close();
  });

  it("fails the request whose model output is NaN, and keeps serving the others", async () => {
    const oracle = checkedOracle(await PairwiseOnnxOracle.load({ modelDir: nanModelDir(tmp.dir), maxCandidates: 8, batching, intraOpThreads: 1 }));
    const [bad, good] = await Promise.allSettled([
      oracle.compare("describe the river.", ["a grim river.", "a calm river."]),
      oracle.compare("describe the river.", ["a calm river.", "a quiet river , long and green."]),
    ]);
    assert.equal(bad.status, "rejected");
    const err = (bad as PromiseRejectedResult).reason;
    assert.ok(err instanceof RpcError);
    assert.equal(err.code, Code.INTERNAL);
    assert.match(err.message, /P\[0\]\[1\] = NaN is not finite/);
    assert.equal(good.status, "fulfilled");
    // logit = 0.5 · tokens: rows are 3 segments; the two orders have the same length, so P = σ(0) = 1/2.
    assert.equal((good as PromiseFulfilledResult<{ matrix: number[][] }>).value.matrix[0][1], 0.5);
    await oracle.close();
  });
});

describe("reward-onnx", () => {
  it("gives σ(r_i − r_j) from one reward per response ([batch, 1] output)", async () => {
    const weights = { ...DEFAULT_WEIGHTS, good: 0.8, bad: 1.7 };
    const dir = modelDir(tmp.dir, "reward", "reward", { weights });
    const oracle = await createOracle(oracleConfig({ backend: "reward-onnx", modelDir: dir, batching }));
    const { matrix, truncatedTexts } = await oracle.compare(PROMPT, CANDIDATES);
    assert.equal(truncatedTexts, 0);
    assertMatrixClose(matrix, expectedMatrix(PROMPT, CANDIDATES, weights));
    assert.equal(oracle.describe().pairwise, false);
    assert.equal(oracle.describe().backend, "reward-onnx");
    await oracle.close();
  });

  it("cuts the prompt and the responses to their limits, special tokens not counted", async () => {
    const dir = modelDir(tmp.dir, "reward-short", "reward", { config: { source_max_length: 3, candidate_max_length: 2 } });
    const oracle = await createOracle(oracleConfig({ backend: "reward-onnx", modelDir: dir, batching }));
    // Prompt "tell me about" (no subject); responses "the cat", "the dog"(both off-subject: −1), "kind": +1
    const { matrix, truncatedTexts } = await oracle.compare(PROMPT, ["the cat is kind.", "the dog is rude.", "kind"]);
    assert.equal(truncatedTexts, 3);
    assertMatrixClose(matrix, expectedMatrix("tell me about", ["the cat", "the dog", "kind"], DEFAULT_WEIGHTS));
    await oracle.close();
  });
});

describe("the embedded default oracle (assets/oracle)", () => {
  it("is what scripts/make-default-oracle.ts makes, byte for byte, and small", () => {
    const dir = modelDir(tmp.dir, "fresh-default", "pairwise");
    for (const file of ["model.onnx", "tokenizer.json", "oracle_config.json"]) {
      const committed = readFileSync(join("assets/oracle", file));
      assert.ok(committed.equals(readFileSync(join(dir, file))), `assets/oracle/${file} is stale: rerun node --import tsx scripts/make-default-oracle.ts`);
    }
    assert.ok(statSync("assets/oracle/model.onnx").size < 2 * 1024 * 1024);
  });

  it("loads through the default config and prefers GOOD, on-subject candidates", async () => {
    const oracle = await createOracle(oracleConfig({}));
    assert.equal(oracle.describe().backend, "pairwise-onnx");
    const { matrix } = await oracle.compare(PROMPT, CANDIDATES);
    assertMatrixClose(matrix, expectedMatrix(PROMPT, CANDIDATES, DEFAULT_WEIGHTS));
    assert.ok(matrix[0][1] > 0.9); // "kind and warm" ≻ "rude"
    await oracle.close();
  });
});

describe("start-up errors", () => {
  const load = (dir: string, backend: "pairwise-onnx" | "reward-onnx" = "pairwise-onnx") => createOracle(oracleConfig({ backend, modelDir: dir, batching }));
  const failsWith = (pattern: RegExp) => (err: unknown) => {
    assert.ok(err instanceof RpcError, String(err));
    assert.equal(err.code, Code.FAILED_PRECONDITION);
    assert.match(err.message, pattern);
    return true;
  };
  const linear = (build: (g: GraphBuilder) => void) => {
    const g = new GraphBuilder();
    build(g);
    return serializeModel(g.build());
  };

  it("a missing directory, model file or tokenizer", async () => {
    await assert.rejects(load(join(tmp.dir, "nowhere")), failsWith(/tokenizer\.json: cannot read the tokenizer/));
    const dir = join(tmp.dir, "no-model");
    writeModel(dir, new Uint8Array());
    const { rmSync } = await import("node:fs");
    rmSync(join(dir, "model.onnx"));
    await assert.rejects(load(dir), failsWith(/model\.onnx: the model file is missing/));
  });

  it("a corrupt model file", async () => {
    const dir = join(tmp.dir, "corrupt");
    writeModel(dir, Uint8Array.from({ length: 200 }, (_, i) => (i * 37) % 256));
    await assert.rejects(load(dir), failsWith(/onnxruntime cannot load it \(corrupt or unsupported\)/));
  });

  it("wrong inputs or outputs", async () => {
    const dir = join(tmp.dir, "wrong");
    writeModel(dir, linear((g) => g.output("logits", DataType.FLOAT, ["batch"], g.reduceSum(g.cast(g.input("ids", DataType.INT64, ["batch", "length"]), DataType.FLOAT), [1]))));
    await assert.rejects(load(dir), failsWith(/has no input "input_ids"/));

    writeModel(
      dir,
      linear((g) => {
        g.input("input_ids", DataType.INT64, ["batch", "length"]);
        const mask = g.input("attention_mask", DataType.FLOAT, ["batch", "length"]);
        g.output("logits", DataType.FLOAT, ["batch"], g.reduceSum(mask, [1]));
      }),
    );
    await assert.rejects(load(dir), failsWith(/input "attention_mask" must be an int64 tensor, it is float32/));

    const twoInputs = (g: GraphBuilder) => {
      const ids = g.cast(g.input("input_ids", DataType.INT64, ["batch", "length"]), DataType.FLOAT);
      const mask = g.cast(g.input("attention_mask", DataType.INT64, ["batch", "length"]), DataType.FLOAT);
      return g.add(ids, mask); // (batch, length)
    };
    writeModel(dir, linear((g) => g.output("scores", DataType.FLOAT, ["batch"], g.reduceSum(twoInputs(g), [1]))));
    await assert.rejects(load(dir), failsWith(/no output named "logits" \(outputs: scores\)/));
    await assert.rejects(load(dir, "reward-onnx"), failsWith(/no output named "rewards" or "logits"/));

    writeModel(dir, linear((g) => g.output("logits", DataType.FLOAT, ["batch", "length"], twoInputs(g))));
    await assert.rejects(load(dir), failsWith(/output "logits" must have shape \[batch\] or \[batch, 1\], it has \[batch, length\]/));

    writeModel(dir, linear((g) => g.output("logits", DataType.INT64, ["batch"], g.cast(g.reduceSum(twoInputs(g), [1]), DataType.INT64))));
    await assert.rejects(load(dir), failsWith(/output "logits" must be a float32 or float64 tensor, it is int64/));
  });

  it("a bad oracle_config.json, a wrong kind, or a tokenizer without PairRM's prefixes", async () => {
    const dir = modelDir(tmp.dir, "badconfig", "pairwise");
    writeFileSync(join(dir, "oracle_config.json"), JSON.stringify({ source_max_length: -3 }));
    await assert.rejects(load(dir), failsWith(/oracle_config\.json: field source_max_length/));
    writeFileSync(join(dir, "oracle_config.json"), "{ not json");
    await assert.rejects(load(dir), failsWith(/oracle_config\.json: not valid JSON/));
    writeFileSync(join(dir, "oracle_config.json"), JSON.stringify({ kind: "pairwise" }));
    await assert.rejects(load(dir, "reward-onnx"), failsWith(/says kind "pairwise"; use backend "pairwise-onnx"/));
    writeFileSync(join(dir, "oracle_config.json"), JSON.stringify({ source_prefix: "<|prompt|>" }));
    await assert.rejects(load(dir), failsWith(/prefix token "<\|prompt\|>" is not in the vocabulary/));
  });
});
