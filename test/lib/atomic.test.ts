/**
 * lib/atomic: directories and files appear whole or not at all, failures leave the target as it was and no
 * temporary behind, and removeStaleTemps clears what a crash left. Run: node --import tsx --test test/lib/atomic.test.ts
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { after, describe, test } from "node:test";
import { removeStaleTemps, tempSiblingOf, writeDirAtomic, writeDirAtomicAsync, writeFileAtomic } from "../../lib/atomic.js";

const root = mkdtempSync(join(tmpdir(), "sppo-atomic-"));
after(() => rmSync(root, { recursive: true, force: true }));

function fresh(name: string): string {
  const parent = join(root, name);
  mkdirSync(parent);
  return parent;
}

describe("atomic writes", () => {
  test("tempSiblingOf is a hidden sibling, unique per call", () => {
    const a = tempSiblingOf("/x/y/v3");
    assert.equal(dirname(a), "/x/y");
    assert.match(basename(a), new RegExp(`^\\.tmp-v3-${process.pid}-[0-9a-f]{8}$`));
    assert.notEqual(a, tempSiblingOf("/x/y/v3"));
  });

  test("writeDirAtomic publishes a directory, replaces an existing one, and leaves nothing on failure", () => {
    const parent = fresh("sync");
    const target = join(parent, "v1");
    writeDirAtomic(target, (tmp) => {
      assert.deepEqual(readdirSync(parent), [basename(tmp)], "only the temporary exists while filling");
      writeFileSync(join(tmp, "a.txt"), "one");
    });
    assert.deepEqual(readdirSync(parent), ["v1"]);
    writeDirAtomic(target, (tmp) => writeFileSync(join(tmp, "b.txt"), "two"));
    assert.deepEqual(readdirSync(target), ["b.txt"], "republishing replaces the old directory");
    assert.throws(
      () =>
        writeDirAtomic(target, (tmp) => {
          writeFileSync(join(tmp, "c.txt"), "three");
          throw new Error("disk full");
        }),
      /disk full/,
    );
    assert.deepEqual(readdirSync(parent), ["v1"], "no temporary left behind");
    assert.equal(readFileSync(join(target, "b.txt"), "utf8"), "two", "the target is as it was");
  });

  test("writeDirAtomicAsync does the same for an asynchronous filler and returns its value", async () => {
    const parent = fresh("async");
    const target = join(parent, "deep", "v2");
    const got = await writeDirAtomicAsync(target, async (tmp) => {
      await writeFile(join(tmp, "a.bin"), new Uint8Array([1, 2, 3]));
      return 42;
    });
    assert.equal(got, 42);
    assert.deepEqual([...readFileSync(join(target, "a.bin"))], [1, 2, 3]);
    await assert.rejects(
      writeDirAtomicAsync(target, async () => {
        throw new Error("stream broke");
      }),
      /stream broke/,
    );
    assert.deepEqual(readdirSync(join(parent, "deep")), ["v2"]);
    assert.deepEqual(readdirSync(target), ["a.bin"]);
  });

  test("writeFileAtomic replaces a file whole", () => {
    const parent = fresh("file");
    const path = join(parent, "summary.json");
    writeFileAtomic(path, "{}\n");
    writeFileAtomic(path, '{"done": true}\n');
    assert.equal(readFileSync(path, "utf8"), '{"done": true}\n');
    assert.deepEqual(readdirSync(parent), ["summary.json"]);
    assert.throws(() => writeFileAtomic(join(parent, "missing", "x.json"), "{}"), /ENOENT/);
    assert.deepEqual(readdirSync(parent), ["summary.json"]);
  });

  test("removeStaleTemps removes .tmp-* files and folders only, and accepts a missing folder", () => {
    const parent = fresh("stale");
    mkdirSync(join(parent, ".tmp-v3-1-abcd"));
    writeFileSync(join(parent, ".tmp-v3-1-abcd", "model.safetensors"), "half");
    writeFileSync(join(parent, ".tmp-run.json-1-abcd"), "half");
    mkdirSync(join(parent, "v2"));
    writeFileSync(join(parent, ".keep"), "");
    removeStaleTemps(parent);
    assert.deepEqual(readdirSync(parent).sort(), [".keep", "v2"]);
    removeStaleTemps(join(parent, "absent"));
  });
});
