/**
 * The optimizer's hashing helpers under the names its tests know; the one implementation is lib/weights/manifest.ts
 * (and atomic writes are lib/atomic.ts).
 */
export { sha256Bytes, sha256Concat } from "../../lib/weights/manifest.js";
