/**
 * Weight sync between the optimizer (serves GetWeights) and the generator (pulls on LoadPolicy): one manifest format,
 * the serving stream, and the verifying receiver. Run the tests with
 * `node --import tsx --test test/lib/weights/weights.test.ts`.
 */
export {
  type DirectoryManifest,
  directoryManifest,
  directoryManifestSync,
  LEADING_FILES,
  manifestNames,
  manifestOrder,
  sha256Bytes,
  sha256Concat,
  sha256OfFile,
  sha256OfFileSync,
  unsafeFileName,
  versionSha256,
  type WeightFile,
} from "./manifest.js";
export { type PullOptions, pullWeights, type ReceivedWeights, type ReceiveOptions, receiveWeights } from "./pull.js";
export { chunkSize, DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES, type WeightStreamOptions, weightStream } from "./serve.js";
