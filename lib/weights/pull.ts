/**
 * The pulling side of a weight stream: receive one PolicyManifest and its FileChunks into a temporary sibling of the
 * destination, verify every file's SHA-256 and the version's SHA-256, then publish the directory with one rename
 * (lib/atomic.ts `writeDirAtomicAsync`). Readers see either no directory or a complete, verified one; a failed pull
 * leaves nothing behind.
 *
 * What the stream may not do (each a DATA_LOSS naming the file or the field): start without a manifest, name a file
 * outside the directory or twice, send a chunk for an unknown file, at a gap or overlap (chunks of a file arrive in
 * offset order), or past the file's declared size, end before a file is complete, deliver bytes whose hash differs
 * from the manifest's, or a version whose concatenated hash differs from manifest.policy.sha256 or from the checksum
 * the caller expects. A manifest for another version than the one asked for is FAILED_PRECONDITION.
 *
 *   const pulled = await pullWeights({ target: "dns:///optimizer:50053", version: 3, destination: "/var/policies/v3" });
 */
import { createHash, type Hash } from "node:crypto";
import { mkdir, open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import type { PolicyVersion } from "../../gen/sppo/v1/common_pb.js";
import { type GetWeightsResponse, Optimizer } from "../../gen/sppo/v1/optimizer_pb.js";
import { writeDirAtomicAsync } from "../atomic.js";
import { Code, RpcError } from "../errors.js";
import { type ClientOptions, createClient } from "../grpc/client.js";
import { confinedPath } from "../paths.js";
import { hashInto, unsafeFileName, type WeightFile } from "./manifest.js";

export interface ReceiveOptions {
  /** The version asked for; a manifest for another one fails with FAILED_PRECONDITION. */
  version?: number;
  /** The version checksum the caller expects (LoadPolicyRequest.sha256); "" or unset: trust the manifest's. */
  sha256?: string;
  /** The most bytes the manifest may declare in total (protects the disk from a runaway server). @default 64 GiB */
  maxTotalBytes?: number;
}

/** A verified policy version on disk. */
export interface ReceivedWeights {
  /** The published directory (the destination). */
  dir: string;
  /** The manifest's policy, its sha256 verified. */
  policy: PolicyVersion;
  files: WeightFile[];
  totalBytes: number;
}

function dataLoss(message: string): RpcError {
  return new RpcError(Code.DATA_LOSS, message);
}

interface Incoming {
  file: WeightFile;
  /** Where the file is written: its name confined to the temporary directory. */
  path: string;
  handle: FileHandle | undefined;
  received: number;
  hash: Hash;
}

/**
 * Writes the weight stream `responses` into `destination` (replacing an existing directory there) and returns what
 * was received. Throws RpcError (DATA_LOSS, FAILED_PRECONDITION, or the stream's own error) and removes the temporary
 * directory on any failure; `destination` is untouched unless the whole version verified.
 */
export async function receiveWeights(
  responses: AsyncIterable<GetWeightsResponse>,
  destination: string,
  options: ReceiveOptions = {},
): Promise<ReceivedWeights> {
  // Start reading before the first await: lib/grpc's server-streaming client loses an error status that arrives
  // before anyone iterates (the stream then looks like a clean, empty end), so a refusal must find a reader waiting.
  const iterator = responses[Symbol.asyncIterator]();
  const first = iterator.next();
  first.catch(() => {}); // handled below; this only keeps an early failure from being reported as unhandled
  let finished = false;
  const incoming: Incoming[] = [];
  try {
    return await writeDirAtomicAsync(destination, async (tmp) => {
      let policy: PolicyVersion | undefined;
      // Every file's bytes in stream order; valid while chunks arrive in manifest order (file by file), which is
      // what weightStream sends. Otherwise the version hash is computed again from disk at the end.
      const whole = createHash("sha256");
      let inOrder = true;
      let lastFile = 0;
      let totalBytes = 0;
      for (let next = await first; !next.done; next = await iterator.next()) {
        const kind = next.value.kind;
        if (kind.case === "manifest") {
          if (policy) throw dataLoss("manifest: a second manifest arrived in one stream");
          const manifest = kind.value;
          if (!manifest.policy) throw dataLoss("manifest.policy: missing");
          policy = manifest.policy;
          if (options.version !== undefined && policy.version !== options.version) {
            throw new RpcError(Code.FAILED_PRECONDITION, `manifest.policy.version: the server sent version ${policy.version}, version ${options.version} was asked for`);
          }
          if (!/^[0-9a-f]{64}$/.test(policy.sha256)) throw dataLoss(`manifest.policy.sha256: not a hex SHA-256 ("${policy.sha256}")`);
          const names = new Set<string>();
          const limit = options.maxTotalBytes ?? 64 * 2 ** 30;
          for (const [i, f] of manifest.files.entries()) {
            const why = unsafeFileName(f.name);
            if (why) throw dataLoss(`manifest.files[${i}].name: "${f.name}" ${why}`);
            // The names come from the remote peer: each one is confined to the directory it is received into.
            let path: string;
            try {
              path = confinedPath(tmp, f.name, `manifest.files[${i}].name`);
            } catch (err) {
              if (RpcError.is(err, "unsafe-path")) throw dataLoss(err.message);
              throw err;
            }
            if (names.has(f.name)) throw dataLoss(`manifest.files[${i}].name: "${f.name}" is listed twice`);
            names.add(f.name);
            if (!/^[0-9a-f]{64}$/.test(f.sha256)) throw dataLoss(`manifest.files[${i}].sha256: not a hex SHA-256 for ${f.name}`);
            totalBytes += Number(f.sizeBytes);
            if (totalBytes > limit) throw dataLoss(`manifest.files: ${totalBytes} bytes declared, more than the limit of ${limit}`);
            incoming.push({ file: { name: f.name, sizeBytes: Number(f.sizeBytes), sha256: f.sha256 }, path, handle: undefined, received: 0, hash: createHash("sha256") });
          }
          // A name cannot be a file and the folder of another one ("a" and "a/b").
          for (const name of names) {
            const parts = name.split("/");
            for (let k = 1; k < parts.length; k++) {
              const folder = parts.slice(0, k).join("/");
              if (names.has(folder)) throw dataLoss(`manifest.files: "${folder}" is listed as a file and as the folder of "${name}"`);
            }
          }
          continue;
        }
        if (kind.case !== "chunk") throw dataLoss("stream: a response with neither a manifest nor a chunk");
        if (!policy) throw dataLoss("stream: a chunk arrived before the manifest");
        const chunk = kind.value;
        const target = incoming[chunk.fileIndex];
        if (!target) throw dataLoss(`chunk.file_index: ${chunk.fileIndex} is not in the manifest (${incoming.length} files)`);
        const name = target.file.name;
        const offset = Number(chunk.offset);
        if (offset !== target.received) throw dataLoss(`${name}: chunk at offset ${offset}, expected ${target.received} (a gap or an overlap)`);
        if (target.received + chunk.data.length > target.file.sizeBytes) {
          throw dataLoss(`${name}: ${target.received + chunk.data.length} bytes received, more than its manifest size ${target.file.sizeBytes}`);
        }
        if (chunk.fileIndex < lastFile) inOrder = false;
        else if (chunk.fileIndex > lastFile) {
          // Files skipped over must be empty (they have no chunks) for the stream to still be in manifest order.
          for (let i = lastFile; i < chunk.fileIndex; i++) if (incoming[i].received !== incoming[i].file.sizeBytes) inOrder = false;
          lastFile = chunk.fileIndex;
        }
        if (!target.handle) {
          await mkdir(dirname(target.path), { recursive: true });
          target.handle = await open(target.path, "wx");
        }
        await target.handle.write(chunk.data, 0, chunk.data.length, offset);
        target.hash.update(chunk.data);
        if (inOrder) whole.update(chunk.data);
        target.received += chunk.data.length;
      }
      finished = true;
      if (!policy) throw dataLoss("stream: ended without a manifest");
      for (const item of incoming) {
        const { name, sizeBytes, sha256 } = item.file;
        if (item.received !== sizeBytes) throw dataLoss(`${name}: the stream ended after ${item.received} of ${sizeBytes} bytes`);
        if (!item.handle) {
          // An empty file has no chunks; create it so that the directory matches the manifest.
          await mkdir(dirname(item.path), { recursive: true });
          item.handle = await open(item.path, "wx");
        }
        await item.handle.close(); // writeDirAtomicAsync syncs every file before the rename
        item.handle = undefined;
        const got = item.hash.digest("hex");
        if (got !== sha256) throw dataLoss(`${name}: SHA-256 ${got} does not match the manifest's ${sha256}`);
      }
      let versionHash: string;
      if (inOrder) versionHash = whole.digest("hex");
      else {
        const again = createHash("sha256");
        for (const item of incoming) await hashInto(again, item.path);
        versionHash = again.digest("hex");
      }
      if (versionHash !== policy.sha256) throw dataLoss(`version ${policy.version}: SHA-256 over its files ${versionHash} does not match the manifest's ${policy.sha256}`);
      if (options.sha256 && options.sha256.toLowerCase() !== versionHash) {
        throw dataLoss(`sha256: version ${policy.version} has SHA-256 ${versionHash}, expected ${options.sha256}`);
      }
      return { dir: destination, policy, files: incoming.map((i) => i.file), totalBytes };
    });
  } finally {
    // Stopped early (a bad chunk): end the stream so that the call is cancelled.
    if (!finished) await iterator.return?.().catch(() => {});
    for (const item of incoming) await item.handle?.close().catch(() => {});
  }
}

export interface PullOptions extends ReceiveOptions {
  /** gRPC target of the Optimizer ("dns:///optimizer:50053", "127.0.0.1:50053"). */
  target: string;
  version: number;
  /** Directory the version is published as. */
  destination: string;
  /** Bytes per chunk asked for (0: the server's default). */
  chunkBytes?: number;
  /** Deadline of the whole stream, in ms. @default 10 min */
  deadlineMs?: number;
  signal?: AbortSignal;
  /** Client settings (TLS, message limits, ...). */
  client?: ClientOptions;
}

/** Pulls `version` from the Optimizer at `target` over GetWeights into `destination`, verified (see receiveWeights). */
export async function pullWeights(options: PullOptions): Promise<ReceivedWeights> {
  const client = createClient(Optimizer, options.target, options.client ?? {});
  try {
    const stream = client.getWeights(
      { version: options.version, chunkBytes: options.chunkBytes ?? 0 },
      { deadlineMs: options.deadlineMs ?? 600_000, signal: options.signal },
    );
    return await receiveWeights(stream, options.destination, options);
  } finally {
    client.close();
  }
}
