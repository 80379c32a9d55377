/**
 * lib/paths: confinedPath on real files in a temporary directory. Run: node --import tsx --test test/lib/paths.test.ts
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, RpcError } from "../../lib/errors.js";
import { confinedPath } from "../../lib/paths.js";

let tmp: string;
let root: string;
let outside: string;

before(() => {
  tmp = mkdtempSync(join(tmpdir(), "sppo-paths-"));
  root = join(tmp, "root");
  outside = join(tmp, "outside");
  mkdirSync(join(root, "sub", "deeper"), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(outside, "secret.bin"), "not yours");
  writeFileSync(join(root, "sub", "weights.bin"), "yours");
  symlinkSync(outside, join(root, "link-out"));
  symlinkSync(join(outside, "secret.bin"), join(root, "file-out"));
  symlinkSync(join(root, "sub"), join(root, "link-in"));
});

after(() => rmSync(tmp, { recursive: true, force: true }));

/** Asserts that confinedPath refuses `name` with a message naming `what`, the name, the root and `why`. */
function refuses(name: string, why: RegExp): void {
  assert.throws(
    () => confinedPath(root, name, "manifest.files[0].name"),
    (err: unknown) => {
      assert.ok(RpcError.is(err, "unsafe-path"), `expected an "unsafe-path" RpcError, got ${err}`);
      assert.equal(err.code, Code.DATA_LOSS);
      assert.equal(err.field, "manifest.files[0].name");
      assert.ok(err.message.startsWith(`manifest.files[0].name: ${JSON.stringify(name)} `), err.message);
      assert.ok(err.message.includes(root), err.message);
      assert.match(err.message, why);
      return true;
    },
    name,
  );
}

describe("confinedPath", () => {
  test("accepts ordinary and nested names, existing or not, and resolves them under the root", () => {
    assert.equal(confinedPath(root, "model.safetensors", "f"), join(root, "model.safetensors"));
    assert.equal(confinedPath(root, "sub/weights.bin", "f"), join(root, "sub", "weights.bin"));
    assert.equal(confinedPath(root, "sub/deeper/new/file.bin", "f"), join(root, "sub", "deeper", "new", "file.bin"));
    assert.equal(confinedPath(root, "sub/../config.json", "f"), join(root, "config.json"), "a .. that stays inside");
    assert.equal(confinedPath(root, "..hidden-but-inside", "f"), join(root, "..hidden-but-inside"));
    assert.equal(confinedPath(root, "link-in/weights.bin", "f"), join(root, "link-in", "weights.bin"), "a symlink that stays inside");
  });

  test("a root that does not exist yet is checked lexically", () => {
    const missing = join(tmp, "not-yet");
    assert.equal(confinedPath(missing, "a/b.bin", "f"), join(missing, "a", "b.bin"));
    assert.throws(() => confinedPath(missing, "../root/x", "f"), (err) => RpcError.is(err, "unsafe-path"));
  });

  test("refuses absolute names", () => {
    refuses("/etc/passwd", /is an absolute path/);
    refuses(join(root, "sub", "weights.bin"), /is an absolute path/);
    refuses("\\\\server\\share", /is an absolute path/);
    refuses("C:/Windows/x", /is an absolute path/);
  });

  test("refuses names leading outside through ..", () => {
    refuses("../x", /leads outside the directory/);
    refuses("a/../../x", /leads outside the directory/);
    refuses("sub/deeper/../../../outside/secret.bin", /leads outside the directory/);
    refuses("..", /leads outside the directory/);
  });

  test("refuses empty names, the root itself, and NUL", () => {
    refuses("", /is empty/);
    refuses(".", /names the directory itself/);
    refuses("sub/..", /names the directory itself/);
    refuses("model\0.safetensors", /contains a NUL byte/);
  });

  test("refuses a symlink along the way that points outside, for existing and new files", () => {
    refuses("link-out/secret.bin", /through a symbolic link/);
    refuses("link-out/new-file.bin", /through a symbolic link/);
    refuses("link-out/new/dir/file.bin", /through a symbolic link/);
    refuses("file-out", /through a symbolic link/);
  });
});
