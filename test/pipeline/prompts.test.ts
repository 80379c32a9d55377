/** Prompt sets: JSONL, Parquet, HF dataset directories, bad data, splitting. Run: node --import tsx --test test/pipeline/prompts.test.ts */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parquetWriteBuffer } from "hyparquet-writer";
import { RpcError } from "../../lib/errors.js";
import { loadPrompts, splitPrompts } from "../../pipeline/prompts.js";

const dir = mkdtempSync(join(tmpdir(), "sppo-prompts-"));
const write = (name: string, data: string | Buffer) => {
  const path = join(dir, name);
  writeFileSync(path, data);
  return path;
};
const parquet = (prompts: string[], extra?: Record<string, string[]>) =>
  Buffer.from(
    parquetWriteBuffer({
      columnData: [
        { name: "prompt", data: prompts, type: "STRING" },
        ...Object.entries(extra ?? {}).map(([name, data]) => ({ name, data, type: "STRING" as const })),
      ],
    }),
  );

describe("pipeline/prompts", () => {
  it("reads JSONL, skipping blank lines, with ids naming file and line", async () => {
    const path = write("a.jsonl", '{"prompt": "one"}\n\n{"prompt": "two", "other": 1}\n');
    const prompts = await loadPrompts(path);
    assert.deepEqual(prompts, [
      { id: `${path}:1`, prompt: "one" },
      { id: `${path}:3`, prompt: "two" },
    ]);
  });

  it("names the line of a broken JSONL row", async () => {
    const path = write("broken.jsonl", '{"prompt": "ok"}\n{"prompt": "half\n');
    await assert.rejects(loadPrompts(path), (err: Error) => RpcError.is(err, "prompt-data") && err.message.startsWith(`${path}:2: not valid JSON`));
  });

  it("refuses rows without a string prompt, empty prompts and empty sets", async () => {
    await assert.rejects(loadPrompts(write("noprompt.jsonl", '{"text": "x"}\n')), /noprompt\.jsonl:1: expected an object with a "prompt" field/);
    await assert.rejects(loadPrompts(write("num.jsonl", '{"prompt": 3}\n')), /num\.jsonl:1: "prompt" must be a string, got number/);
    await assert.rejects(loadPrompts(write("blank.jsonl", '{"prompt": "  "}\n')), /blank\.jsonl:1: "prompt" is empty/);
    await assert.rejects(loadPrompts(write("empty.jsonl", "\n\n")), /empty\.jsonl: the prompt set is empty/);
    await assert.rejects(loadPrompts(join(dir, "nope.jsonl")), /nope\.jsonl: no such prompt file/);
  });

  it("names the line with invalid UTF-8", async () => {
    const path = write("latin.jsonl", Buffer.concat([Buffer.from('{"prompt": "fine"}\n{"prompt": "caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]));
    await assert.rejects(loadPrompts(path), (err: Error) => err.message === `${path}:2: not valid UTF-8`);
  });

  it("reads the prompt column of a Parquet file", async () => {
    const path = write("p.parquet", parquet(["alpha", "beta"], { chosen: ["x", "y"] }));
    assert.deepEqual(
      (await loadPrompts(path)).map((p) => p.prompt),
      ["alpha", "beta"],
    );
  });

  it("reads a Hugging Face dataset directory, preferring the train split", async () => {
    const ds = join(dir, "ultrafeedback");
    mkdirSync(join(ds, "data"), { recursive: true });
    writeFileSync(join(ds, "data", "train_prefs-00000-of-00002.parquet"), parquet(["t1", "t2"]));
    writeFileSync(join(ds, "data", "train_prefs-00001-of-00002.parquet"), parquet(["t3"]));
    writeFileSync(join(ds, "data", "test_prefs-00000-of-00001.parquet"), parquet(["held"]));
    const prompts = await loadPrompts(ds);
    assert.deepEqual(
      prompts.map((p) => p.prompt),
      ["t1", "t2", "t3"],
    );
    assert.equal(prompts[2].id, "data/train_prefs-00001-of-00002.parquet:1");
  });

  it("names a Parquet file without a prompt column", async () => {
    const path = write("nocol.parquet", Buffer.from(parquetWriteBuffer({ columnData: [{ name: "text", data: ["a"], type: "STRING" }] })));
    await assert.rejects(loadPrompts(path), (err: Error) => RpcError.is(err, "prompt-data") && err.message.includes("nocol.parquet"));
  });

  it("splits into disjoint per-iteration splits and a held-out set, reproducibly", () => {
    const prompts = Array.from({ length: 50 }, (_, i) => ({ id: String(i), prompt: `p${i}` }));
    const a = splitPrompts(prompts, { iterations: 3, perIteration: 0, evalCount: 8, seed: 3 });
    const b = splitPrompts(prompts, { iterations: 3, perIteration: 0, evalCount: 8, seed: 3 });
    assert.deepEqual(a, b);
    assert.equal(a.evaluation.length, 8);
    assert.deepEqual(
      a.iterations.map((s) => s.length),
      [14, 14, 14],
    );
    const ids = [...a.evaluation, ...a.iterations.flat()].map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, "no prompt is used twice");
    const c = splitPrompts(prompts, { iterations: 2, perIteration: 5, evalCount: 4, seed: 3 });
    assert.deepEqual(
      c.iterations.map((s) => s.length),
      [5, 5],
    );
    assert.throws(() => splitPrompts(prompts, { iterations: 3, perIteration: 20, evalCount: 8, seed: 1 }), /cannot make 3 disjoint splits/);
    assert.throws(() => splitPrompts(prompts.slice(0, 4), { iterations: 1, perIteration: 0, evalCount: 8, seed: 1 }), /not enough for 8 held-out/);
  });
});
