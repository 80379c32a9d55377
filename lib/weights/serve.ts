/**
 * The serving side of a weight stream (sppo.v1.Optimizer/GetWeights): one PolicyManifest, then every file's bytes as
 * FileChunks in manifest order, each file's chunks at increasing offsets. Files are read chunk by chunk, so a
 * multi-GB model never sits in memory; the async generator only reads the next chunk when the consumer (grpc-js
 * write backpressure through the typed layer) asks for it.
 *
 * An optimizer's GetWeights handler is then:
 *   async *getWeights(request, context) {
 *     const dir = versionDir(request.version);             // NOT_FOUND when unknown: the optimizer's business
 *     yield* weightStream(dir, { version: request.version, iteration, family, parameters },
 *                         { chunkBytes: request.chunkBytes, signal: context.signal });
 *   }
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { open } from "node:fs/promises";
import { PolicyVersionSchema } from "../../gen/sppo/v1/common_pb.js";
import {
  FileChunkSchema,
  type GetWeightsResponse,
  GetWeightsResponseSchema,
  PolicyFileSchema,
  PolicyManifestSchema,
} from "../../gen/sppo/v1/optimizer_pb.js";
import { Code, RpcError } from "../errors.js";
import { confinedPath } from "../paths.js";
import { directoryManifest, type WeightFile } from "./manifest.js";

/** Chunk size when the request leaves chunk_bytes at 0. */
export const DEFAULT_CHUNK_BYTES = 1 << 20;
/** Largest chunk served by default: well under grpc-js's 4 MiB default receive limit, whatever the client's config. */
export const MAX_CHUNK_BYTES = 3 << 20;
/** Smallest chunk served (smaller requests are raised to this: tiny chunks only cost per-message overhead). */
export const MIN_CHUNK_BYTES = 1 << 10;

export interface WeightStreamOptions {
  /** Requested bytes per chunk; 0 or unset = DEFAULT_CHUNK_BYTES; clamped to [MIN_CHUNK_BYTES, maxChunkBytes]. */
  chunkBytes?: number;
  /** The most bytes per chunk this server sends. @default MAX_CHUNK_BYTES */
  maxChunkBytes?: number;
  /** The file list, when the caller already has it (e.g. recorded at publication); otherwise `dir` is hashed. */
  files?: readonly WeightFile[];
  /** Stops reading when aborted (client gone). */
  signal?: AbortSignal;
}

/** The effective chunk size for a request's `chunk_bytes`. */
export function chunkSize(requested: number | undefined, maxChunkBytes = MAX_CHUNK_BYTES): number {
  const wanted = requested && requested > 0 ? requested : DEFAULT_CHUNK_BYTES;
  return Math.max(MIN_CHUNK_BYTES, Math.min(wanted, maxChunkBytes));
}

/**
 * The GetWeights responses for the model directory `dir`: the manifest (its `policy` is `policy` with `sha256` set to
 * the version checksum over the files, overriding any given one), then the chunks. A file that changes size while it
 * is being sent fails the stream with DATA_LOSS naming it (a published version must be immutable), and so does a
 * given file list that names a path outside `dir` (before anything is sent).
 */
export async function* weightStream(
  dir: string,
  policy: MessageInitShape<typeof PolicyVersionSchema>,
  options: WeightStreamOptions = {},
): AsyncGenerator<GetWeightsResponse> {
  let files: readonly WeightFile[];
  let sha256: string;
  if (options.files) {
    files = options.files;
    sha256 = policy.sha256 ?? "";
    if (!sha256) throw new RpcError(Code.INTERNAL, "weightStream: policy.sha256 is required when files are given");
  } else {
    ({ files, sha256 } = await directoryManifest(dir));
  }
  // A given file list is a record, not a directory listing: none of its names may lead outside `dir`. Checked before
  // the manifest goes out, so that a bad record sends nothing.
  let paths: string[];
  try {
    paths = files.map((f, i) => confinedPath(dir, f.name, `files[${i}].name`));
  } catch (err) {
    if (RpcError.is(err, "unsafe-path")) throw new RpcError(Code.DATA_LOSS, `weightStream: ${err.message}`, { cause: err });
    throw err;
  }
  const size = chunkSize(options.chunkBytes, options.maxChunkBytes);
  yield create(GetWeightsResponseSchema, {
    kind: {
      case: "manifest",
      value: create(PolicyManifestSchema, {
        policy: create(PolicyVersionSchema, { ...policy, sha256 }),
        files: files.map((f) => create(PolicyFileSchema, { name: f.name, sizeBytes: BigInt(f.sizeBytes), sha256: f.sha256 })),
      }),
    },
  });
  for (const [fileIndex, file] of files.entries()) {
    const handle = await open(paths[fileIndex], "r");
    try {
      let offset = 0;
      while (offset < file.sizeBytes) {
        if (options.signal?.aborted) return;
        const want = Math.min(size, file.sizeBytes - offset);
        // A fresh buffer per chunk: the message keeps a reference to it until grpc-js has serialised it.
        const data = Buffer.allocUnsafe(want);
        const { bytesRead } = await handle.read(data, 0, want, offset);
        if (bytesRead !== want) throw new RpcError(Code.DATA_LOSS, `${file.name}: shorter than its manifest size ${file.sizeBytes} (read ${offset + bytesRead} bytes)`);
        yield create(GetWeightsResponseSchema, {
          kind: { case: "chunk", value: create(FileChunkSchema, { fileIndex, offset: BigInt(offset), data }) },
        });
        offset += want;
      }
      if ((await handle.stat()).size !== file.sizeBytes) throw new RpcError(Code.DATA_LOSS, `${file.name}: its size changed while it was being sent`);
    } finally {
      await handle.close();
    }
  }
}
