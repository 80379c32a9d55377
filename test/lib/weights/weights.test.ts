/**
 * lib/weights: manifests, the serving stream and the verifying receiver, in memory and over a real
 * Optimizer.GetWeights server on loopback. Run: node --import tsx --test test/lib/weights/weights.test.ts
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { PolicyVersionSchema } from "../../../gen/sppo/v1/common_pb.js";
import { FileChunkSchema, type GetWeightsResponse, GetWeightsResponseSchema, Optimizer, PolicyManifestSchema } from "../../../gen/sppo/v1/optimizer_pb.js";
import { Code, RpcError } from "../../../lib/errors.js";
import { mount, type RunningServer } from "../../../lib/grpc/serve.js";
import { unimplemented } from "../../../lib/grpc/unimplemented.js";
import { directoryManifest, directoryManifestSync, manifestOrder, sha256Concat, pullWeights, receiveWeights, unsafeFileName, weightStream } from "../../../lib/weights/index.js";
import { serveForTest } from "../grpc/harness.js";

const sha = (data: Uint8Array | string) => createHash("sha256").update(data).digest("hex");

let root: string;
let source: string;
/** File contents by name, as written. */
const contents = new Map<string, Buffer>();

before(() => {
  root = mkdtempSync(join(tmpdir(), "sppo-weights-"));
  source = join(root, "source");
  mkdirSync(join(source, "extra"), { recursive: true });
  const put = (name: string, data: Buffer) => {
    writeFileSync(join(source, name), data);
    contents.set(name, data);
  };
  // Deterministic pseudo-random bytes, several chunks long at the minimum chunk size (1 KiB).
  const big = Buffer.alloc(5000 + 17);
  for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
  put("tokenizer.json", Buffer.from('{"model":{}}'));
  put("model.safetensors", big);
  put("config.json", Buffer.from('{"model_type":"gpt2"}'));
  put("README.md", Buffer.from("# card\n"));
  put("extra/notes.txt", Buffer.from("a nested file"));
  put("empty.bin", Buffer.alloc(0));
  writeFileSync(join(source, ".hidden"), "never part of a version");
});

after(() => rmSync(root, { recursive: true, force: true }));

/** Collects an async iterable. */
async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function* replay(messages: GetWeightsResponse[]): AsyncGenerator<GetWeightsResponse> {
  yield* messages;
}

/** Asserts that `promise` rejects with an RpcError of `code` whose message matches `pattern`. */
async function rejectsWith(promise: Promise<unknown>, code: Code, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof RpcError, `expected an RpcError, got ${err}`);
    assert.equal(err.code, code, `code ${Code[err.code]}: ${err.message}`);
    assert.match(err.message, pattern);
    return true;
  });
}

/** No temporary directory and no destination left behind in `parent` besides `keep`. */
function assertClean(parent: string, keep: string[] = []): void {
  const left = existsSync(parent) ? readdirSync(parent).filter((n) => !keep.includes(n)) : [];
  assert.deepEqual(left, []);
}

describe("directoryManifest", () => {
  test("lists HF files first, then the rest sorted, skipping hidden files, with independent hashes", async () => {
    const { files, sha256 } = await directoryManifest(source);
    assert.deepEqual(
      files.map((f) => f.name),
      ["config.json", "model.safetensors", "tokenizer.json", "README.md", "empty.bin", "extra/notes.txt"],
    );
    for (const f of files) {
      assert.equal(f.sha256, sha(contents.get(f.name) as Buffer), f.name);
      assert.equal(f.sizeBytes, (contents.get(f.name) as Buffer).length, f.name);
    }
    assert.equal(sha256, sha(Buffer.concat(files.map((f) => contents.get(f.name) as Buffer))));
  });

  test("the synchronous flavour (the optimizer's) agrees: same files, same order, same version hash", async () => {
    const sync = directoryManifestSync(source);
    const ours = await directoryManifest(source);
    assert.deepEqual(ours, sync);
    assert.equal(ours.sha256, sha256Concat(sync.files.map((f) => join(source, f.name))));
    assert.deepEqual(directoryManifestSync(source, [], false), { files: sync.files, sha256: "" });
  });

  test("manifestOrder and unsafeFileName", () => {
    assert.deepEqual(manifestOrder(["b", "tokenizer_config.json", "a", "config.json"]), ["config.json", "tokenizer_config.json", "a", "b"]);
    for (const bad of ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", ".ssh/key", "a\\b"]) assert.ok(unsafeFileName(bad), bad);
    for (const good of ["model.safetensors", "sub/dir/file.bin"]) assert.equal(unsafeFileName(good), undefined, good);
  });
});

describe("weightStream → receiveWeights (in memory)", () => {
  test("a round trip reproduces every file and verifies the version hash", async () => {
    const messages = await collect(weightStream(source, { version: 4, iteration: 2, family: "gpt2", parameters: 123n }, { chunkBytes: 1024 }));
    assert.equal(messages[0].kind.case, "manifest");
    const chunks = messages.filter((m) => m.kind.case === "chunk");
    // 5017 bytes at 1 KiB → 5 chunks, plus one chunk for each other non-empty file (4), none for the empty one.
    assert.equal(chunks.length, 5 + 4);
    const dest = join(root, "rt", "v4");
    const got = await receiveWeights(replay(messages), dest, { version: 4 });
    assert.equal(got.policy.version, 4);
    assert.equal(got.policy.iteration, 2);
    assert.equal(got.policy.family, "gpt2");
    for (const [name, data] of contents) assert.deepEqual(readFileSync(join(dest, name)), data, name);
    assert.equal(existsSync(join(dest, ".hidden")), false);
    assertClean(join(root, "rt"), ["v4"]);
    // Receiving again replaces the directory.
    await receiveWeights(replay(messages), dest, { version: 4, sha256: got.policy.sha256 });
    assertClean(join(root, "rt"), ["v4"]);
  });

  test("chunks out of manifest order still verify (the version hash is recomputed from disk)", async () => {
    const messages = await collect(weightStream(source, { version: 1 }, { chunkBytes: 1024 }));
    const [manifest, ...chunks] = messages;
    // Files in reverse order, each file's own chunks still in offset order.
    const byFile = new Map<number, GetWeightsResponse[]>();
    for (const c of chunks) {
      const i = c.kind.case === "chunk" ? c.kind.value.fileIndex : -1;
      byFile.set(i, [...(byFile.get(i) ?? []), c]);
    }
    const reordered = [manifest, ...[...byFile.keys()].sort((a, b) => b - a).flatMap((i) => byFile.get(i) ?? [])];
    const dest = join(root, "reorder", "v1");
    await receiveWeights(replay(reordered), dest, { version: 1 });
    assert.deepEqual(readFileSync(join(dest, "model.safetensors")), contents.get("model.safetensors"));
  });

  describe("bad streams fail with the file named and leave nothing behind", () => {
    let messages: GetWeightsResponse[];
    before(async () => {
      messages = await collect(weightStream(source, { version: 2 }, { chunkBytes: 1024 }));
    });
    const parent = () => join(root, "bad");
    const dest = () => join(parent(), "v2");

    test("a flipped byte in a chunk", async () => {
      const copy = messages.map((m, i) => {
        if (i !== 3 || m.kind.case !== "chunk") return m;
        const data = Buffer.from(m.kind.value.data);
        data[10] ^= 0xff;
        return create(GetWeightsResponseSchema, { kind: { case: "chunk", value: create(FileChunkSchema, { ...m.kind.value, data }) } });
      });
      await rejectsWith(receiveWeights(replay(copy), dest()), Code.DATA_LOSS, /^model\.safetensors: SHA-256 [0-9a-f]{64} does not match/);
      assertClean(parent());
    });

    test("a stream cut short", async () => {
      await rejectsWith(receiveWeights(replay(messages.slice(0, 4)), dest()), Code.DATA_LOSS, /^model\.safetensors: the stream ended after 2048 of 5017 bytes/);
      assertClean(parent());
    });

    test("a missing chunk (gap)", async () => {
      await rejectsWith(receiveWeights(replay([...messages.slice(0, 3), ...messages.slice(4)]), dest()), Code.DATA_LOSS, /^model\.safetensors: chunk at offset 2048, expected 1024/);
      assertClean(parent());
    });

    test("a chunk before the manifest, and no manifest at all", async () => {
      await rejectsWith(receiveWeights(replay(messages.slice(1)), dest()), Code.DATA_LOSS, /before the manifest/);
      await rejectsWith(receiveWeights(replay([]), dest()), Code.DATA_LOSS, /without a manifest/);
      assertClean(parent());
    });

    test("a manifest naming a file outside the directory", async () => {
      const manifest = messages[0].kind.case === "manifest" ? messages[0].kind.value : assert.fail();
      const evil = create(PolicyManifestSchema, { ...manifest, files: manifest.files.map((f, i) => (i === 0 ? { ...f, name: "../escape.json" } : f)) });
      await rejectsWith(
        receiveWeights(replay([create(GetWeightsResponseSchema, { kind: { case: "manifest", value: evil } }), ...messages.slice(1)]), dest()),
        Code.DATA_LOSS,
        /^manifest\.files\[0\]\.name: "\.\.\/escape\.json"/,
      );
      assert.equal(existsSync(join(root, "escape.json")), false);
      assertClean(parent());
    });

    test("a serving file list naming a path outside the directory sends nothing", async () => {
      const { files, sha256 } = await directoryManifest(source);
      const evil = files.map((f, i) => (i === 0 ? { ...f, name: "../source-sibling.bin" } : f));
      await rejectsWith(collect(weightStream(source, { version: 2, sha256 }, { files: evil })), Code.DATA_LOSS, /^weightStream: files\[0\]\.name: "\.\.\/source-sibling\.bin" leads outside/);
    });

    test("a version hash other than the expected one", async () => {
      await rejectsWith(receiveWeights(replay(messages), dest(), { sha256: "0".repeat(64) }), Code.DATA_LOSS, /^sha256: version 2 has SHA-256 [0-9a-f]{64}, expected 0{64}/);
      assertClean(parent());
    });

    test("a manifest whose version hash does not cover its files", async () => {
      const manifest = messages[0].kind.case === "manifest" ? messages[0].kind.value : assert.fail();
      const lying = create(PolicyManifestSchema, { ...manifest, policy: create(PolicyVersionSchema, { version: manifest.policy?.version, sha256: "a".repeat(64) }) });
      await rejectsWith(
        receiveWeights(replay([create(GetWeightsResponseSchema, { kind: { case: "manifest", value: lying } }), ...messages.slice(1)]), dest()),
        Code.DATA_LOSS,
        /^version 2: SHA-256 over its files/,
      );
      assertClean(parent());
    });

    test("another version than the one asked for", async () => {
      await rejectsWith(receiveWeights(replay(messages), dest(), { version: 3 }), Code.FAILED_PRECONDITION, /version 2, version 3 was asked for/);
      assertClean(parent());
    });
  });
});

describe("pullWeights over a real Optimizer.GetWeights server", () => {
  let server: RunningServer;
  /** When set, the server flips one byte of the chunk with this index. */
  let corruptChunk: number | undefined;
  before(async () => {
    server = await serveForTest([
      mount(Optimizer, {
        ...unimplemented(Optimizer, "only GetWeights in this test"),
        async *getWeights(request, context) {
          if (request.version === 10) {
            // A broken peer: one name is also the folder of another.
            for await (const m of weightStream(source, { version: 10 }, { chunkBytes: request.chunkBytes, signal: context.signal })) {
              if (m.kind.case !== "manifest") yield m;
              else {
                const [first, second, ...rest] = m.kind.value.files;
                yield { kind: { case: "manifest", value: { ...m.kind.value, files: [first, { ...second, name: `${first.name}/inner.bin` }, ...rest] } } };
              }
            }
            return;
          }
          if (request.version === 9) {
            // A malicious (or broken) peer: a real version whose second file is renamed to escape the destination.
            for await (const m of weightStream(source, { version: 9 }, { chunkBytes: request.chunkBytes, signal: context.signal })) {
              if (m.kind.case !== "manifest") yield m;
              else yield { kind: { case: "manifest", value: { ...m.kind.value, files: m.kind.value.files.map((f, i) => (i === 1 ? { ...f, name: "../escape.bin" } : f)) } } };
            }
            return;
          }
          if (request.version !== 7) throw new RpcError(Code.NOT_FOUND, `version: ${request.version} was never published`);
          let i = 0;
          for await (const m of weightStream(source, { version: 7, iteration: 3 }, { chunkBytes: request.chunkBytes, signal: context.signal })) {
            if (m.kind.case === "chunk" && i++ === corruptChunk) {
              const data = Buffer.from(m.kind.value.data);
              data[0] ^= 1;
              yield { kind: { case: "chunk", value: { ...m.kind.value, data } } };
            } else yield m;
          }
        },
      }),
    ]);
  });
  after(() => server.shutdown());

  test("pulls and verifies a version in 1 KiB chunks", async () => {
    const { sha256 } = await directoryManifest(source);
    const dest = join(root, "pulled", "v7");
    const got = await pullWeights({ target: `127.0.0.1:${server.port}`, version: 7, destination: dest, chunkBytes: 1024, sha256 });
    assert.equal(got.policy.sha256, sha256);
    assert.equal(got.totalBytes, [...contents.values()].reduce((s, b) => s + b.length, 0));
    for (const [name, data] of contents) assert.deepEqual(readFileSync(join(dest, name)), data, name);
  });

  test("a corrupted chunk on the wire is DATA_LOSS naming the file", async () => {
    corruptChunk = 0; // the first chunk: config.json
    try {
      const parent = join(root, "pulled-bad");
      await rejectsWith(pullWeights({ target: `127.0.0.1:${server.port}`, version: 7, destination: join(parent, "v7") }), Code.DATA_LOSS, /^config\.json: SHA-256/);
      assertClean(parent);
    } finally {
      corruptChunk = undefined;
    }
  });

  test("a peer whose manifest names ../escape.bin is refused, and nothing is written outside the destination", async () => {
    const parent = join(root, "pulled-evil");
    mkdirSync(parent, { recursive: true });
    await rejectsWith(
      pullWeights({ target: `127.0.0.1:${server.port}`, version: 9, destination: join(parent, "v9"), chunkBytes: 1024 }),
      Code.DATA_LOSS,
      /^manifest\.files\[1\]\.name: "\.\.\/escape\.bin"/,
    );
    // The temporary directory the stream was received into is gone, and no escape.bin appeared beside it or above.
    assertClean(parent);
    assert.equal(existsSync(join(root, "escape.bin")), false);
  });

  test("a manifest naming a file and a file inside it as a folder is DATA_LOSS, not a file-system error", async () => {
    const parent = join(root, "pulled-clash");
    mkdirSync(parent, { recursive: true });
    await rejectsWith(
      pullWeights({ target: `127.0.0.1:${server.port}`, version: 10, destination: join(parent, "v10"), chunkBytes: 1024 }),
      Code.DATA_LOSS,
      /^manifest\.files: "[^"]+" is listed as a file and as the folder of "[^"]+\/inner\.bin"/,
    );
    assertClean(parent);
  });

  test("the server's own error comes through with its code", async () => {
    await rejectsWith(pullWeights({ target: `127.0.0.1:${server.port}`, version: 8, destination: join(root, "nope", "v8") }), Code.NOT_FOUND, /version: 8 was never published/);
  });
});
