/**
 * Checkpoint confinement: a checkpoint whose manifest.json names a file outside its directory, or whose files lead
 * outside through a symbolic link, is damaged (a "checkpoint" RpcError) and skipped by Trainer.open for an older one, even when
 * every hash matches. Run: node --import tsx --test test/services/optimizer/checkpoint-paths.test.ts
 */
import assert from "node:assert/strict";
import { readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import type { OptimizerConfig } from "../../../lib/config/optimizer.js";
import { type CheckpointEntry, readCheckpoint } from "../../../services/optimizer/checkpoint.js";
import { sha256Bytes } from "../../../services/optimizer/files.js";
import { Trainer } from "../../../services/optimizer/trainer.js";
import { makeBaseModel, twoCheckpoints } from "./fixtures.js";
import { RpcError } from "../../../lib/errors.js";

const roots: string[] = [];
before(async () => {
  await tf.setBackend("cpu");
});
after(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

/** A run with two checkpoints (optimizer fixtures' twoCheckpoints): `older` after one step, `newer` after two. */
function twoCheckpointsRun(): { root: string; config: OptimizerConfig; older: CheckpointEntry; newer: CheckpointEntry } {
  const root = makeBaseModel();
  roots.push(root);
  return { root, ...twoCheckpoints(root) };
}

/** Rewrites the manifest of the checkpoint in `dir` with `edit` and records its new hash, as a forger would. */
function forgeManifest(dir: string, edit: (files: { name: string; sizeBytes: number; sha256: string }[]) => void): void {
  const doc = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  edit(doc.files);
  const text = `${JSON.stringify(doc, null, 1)}\n`;
  writeFileSync(join(dir, "manifest.json"), text);
  writeFileSync(join(dir, "manifest.sha256"), `${sha256Bytes(text)}\n`);
}

/** Asserts that readCheckpoint(dir) fails with a "checkpoint" RpcError whose message matches `pattern`. */
function refused(dir: string, pattern: RegExp): void {
  assert.throws(
    () => readCheckpoint(dir),
    (err: unknown) => {
      assert.ok(RpcError.is(err, "checkpoint"), `expected a "checkpoint" RpcError, got ${err}`);
      assert.match(err.message, pattern);
      return true;
    },
  );
}

describe("checkpoint paths", () => {
  test("a manifest.json listing ../x is refused and the checkpoint skipped for the older one", () => {
    const { config, older, newer } = twoCheckpointsRun();
    // The file exists outside the checkpoint, with the hash the forged manifest records: only confinement stops it.
    const outside = join(config.checkpointDir, "x");
    writeFileSync(outside, "outside the checkpoint");
    forgeManifest(newer.dir, (files) => files.push({ name: "../x", sizeBytes: 22, sha256: sha256Bytes("outside the checkpoint") }));
    refused(newer.dir, /manifest\.json: files\[\d+\]\.name: "\.\.\/x" leads outside the directory \(a file name must stay inside .*ckpt-/);
    assert.equal(readCheckpoint(older.dir).entry.name, older.name);
    const resumed = Trainer.open(config);
    try {
      assert.equal(resumed.steps, 1, "resumed from the older checkpoint (after one step)");
    } finally {
      resumed.dispose();
    }
  });

  test("absolute names and a manifest that is not a list of files are refused", () => {
    const { newer } = twoCheckpointsRun();
    forgeManifest(newer.dir, (files) => {
      files[0].name = join(newer.dir, files[0].name);
    });
    refused(newer.dir, /files\[0\]\.name: ".*" is an absolute path/);
    writeFileSync(join(newer.dir, "manifest.json"), '{"files": {"name": "x"}}\n');
    writeFileSync(join(newer.dir, "manifest.sha256"), `${sha256Bytes('{"files": {"name": "x"}}\n')}\n`);
    refused(newer.dir, /manifest\.json: field files is not a list/);
  });

  test("a model directory replaced by a symbolic link to one outside is refused, though every hash matches", () => {
    const { root, config, newer } = twoCheckpointsRun();
    const moved = join(root, "elsewhere-model");
    renameSync(join(newer.dir, "model"), moved);
    symlinkSync(moved, join(newer.dir, "model"));
    refused(newer.dir, /files\[0\]\.name: "model\/config\.json" leads outside the directory through a symbolic link/);
    const resumed = Trainer.open(config);
    try {
      assert.equal(resumed.steps, 1, "resumed from the older checkpoint");
    } finally {
      resumed.dispose();
    }
  });

  test("an unlisted symbolic link that loadModel would read (model/tokenizer.json) is refused", () => {
    const { root, newer } = twoCheckpointsRun();
    const foreign = join(root, "foreign-tokenizer.json");
    writeFileSync(foreign, "{}");
    symlinkSync(foreign, join(newer.dir, "model", "tokenizer.json"));
    refused(newer.dir, /model\/tokenizer\.json: a symbolic link \(a checkpoint holds only the files it was written with\)/);
  });
});
