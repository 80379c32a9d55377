/**
 * The one manifest hashing: the file list of a model directory (a policy version, a checkpoint), in the order that is
 * part of the contract, with each file's size and SHA-256, and the version checksum over them. Shared by the side that
 * serves weights (the optimizer's GetWeights), the side that pulls them (the generator's LoadPolicy) and the
 * optimizer's checkpoints, so that all agree on names, order and hashes. Each function comes in two flavours over the
 * same listing and byte feeding: asynchronous (`directoryManifest`, for services whose event loop must stay free) and
 * synchronous (`directoryManifestSync`, for the trainer, which blocks on its steps anyway).
 *
 * The order (common.proto PolicyVersion.sha256): the Hugging Face model files first (config.json, model.safetensors,
 * tokenizer.json, tokenizer_config.json), then every other file sorted by name. Hidden files and folders (any segment
 * starting with ".": temporaries, editor files) and symbolic links are never part of a manifest. The version's
 * SHA-256 is the hash of the files' bytes concatenated in that order.
 */
import { createHash, type Hash } from "node:crypto";
import { closeSync, openSync, readdirSync, readSync, statSync } from "node:fs";
import { open, stat } from "node:fs/promises";
import { basename, isAbsolute, join } from "node:path";
import { confinedPath } from "../paths.js";

/** One file of a policy version. */
export interface WeightFile {
  /** Path relative to the model directory, "/"-separated ("model.safetensors"). */
  name: string;
  sizeBytes: number;
  /** Hex SHA-256 of the file's bytes. */
  sha256: string;
}

/** The model files every HF directory starts with, in manifest order; other files follow, sorted by name. */
export const LEADING_FILES: readonly string[] = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];

const READ_BYTES = 1 << 20;

/**
 * Feeds the bytes of `path` into `hash` — and into `also` when given, from the same read — 1 MiB at a time (a
 * multi-GB file never sits in memory).
 */
export async function hashInto(hash: Hash, path: string, also?: Hash): Promise<void> {
  const handle = await open(path, "r");
  try {
    const buf = Buffer.allocUnsafe(READ_BYTES);
    for (;;) {
      const { bytesRead } = await handle.read(buf, 0, READ_BYTES, null);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      also?.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await handle.close();
  }
}

/** `hashInto`, synchronously. */
export function hashIntoSync(hash: Hash, path: string, also?: Hash): void {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.allocUnsafe(READ_BYTES);
    for (;;) {
      const bytesRead = readSync(fd, buf, 0, READ_BYTES, null);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      also?.update(buf.subarray(0, bytesRead));
    }
  } finally {
    closeSync(fd);
  }
}

/** Hex SHA-256 of bytes in memory (a manifest's text). */
export function sha256Bytes(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Hex SHA-256 of one file. */
export async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  await hashInto(hash, path);
  return hash.digest("hex");
}

/**
 * Hex SHA-256 of the files of `dir` named by `files`, concatenated in order: the version's checksum. A name that
 * leads outside `dir` throws an "unsafe-path" RpcError (lib/paths.ts) before anything is read.
 */
export async function versionSha256(dir: string, files: readonly Pick<WeightFile, "name">[]): Promise<string> {
  const paths = files.map((f, i) => confinedPath(dir, f.name, `files[${i}].name`));
  const hash = createHash("sha256");
  for (const path of paths) await hashInto(hash, path);
  return hash.digest("hex");
}

/** `sha256OfFile`, synchronously. */
export function sha256OfFileSync(path: string): string {
  const hash = createHash("sha256");
  hashIntoSync(hash, path);
  return hash.digest("hex");
}

/** Hex SHA-256 of the concatenated bytes of `paths`, in order (what a client hashing a GetWeights stream computes). */
export function sha256Concat(paths: readonly string[]): string {
  const hash = createHash("sha256");
  for (const path of paths) hashIntoSync(hash, path);
  return hash.digest("hex");
}

/**
 * Collects the regular files under `root/rel`. Hidden entries are skipped, and symbolic links are neither files nor
 * directories to a Dirent, so they are never listed or followed: a manifest only covers what really lies inside.
 * (Listing a model directory is a handful of readdir calls: one synchronous walk serves both flavours.)
 */
function walk(root: string, rel: string, out: string[]): void {
  for (const entry of readdirSync(join(root, rel), { withFileTypes: true })) {
    if (entry.name.startsWith(".")) continue;
    const name = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isDirectory()) walk(root, name, out);
    else if (entry.isFile()) out.push(name);
  }
}

/** Sorts names into manifest order: LEADING_FILES first, the rest by code-point order. */
export function manifestOrder(names: readonly string[]): string[] {
  const rank = (n: string) => {
    const i = LEADING_FILES.indexOf(n);
    return i === -1 ? LEADING_FILES.length : i;
  };
  return [...names].sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/** The names a manifest of `dir` lists (recursively; hidden entries, links and `exclude` left out), in manifest order. */
export function manifestNames(dir: string, exclude: readonly string[] = []): string[] {
  const names: string[] = [];
  walk(dir, "", names);
  return manifestOrder(names.filter((n) => !exclude.includes(n)));
}

/** A directory's manifest: its files with sizes and hashes, and the version checksum over them. */
export interface DirectoryManifest {
  files: WeightFile[];
  sha256: string;
}

/**
 * The files of the model directory `dir` in manifest order (see `manifestNames`), with sizes and hashes, and the
 * version checksum over them; each file is read once, feeding both hashes.
 */
export async function directoryManifest(dir: string, exclude: readonly string[] = []): Promise<DirectoryManifest> {
  const files: WeightFile[] = [];
  const whole = createHash("sha256");
  for (const name of manifestNames(dir, exclude)) {
    const path = join(dir, name);
    const one = createHash("sha256");
    await hashInto(one, path, whole);
    files.push({ name, sizeBytes: (await stat(path)).size, sha256: one.digest("hex") });
  }
  return { files, sha256: whole.digest("hex") };
}

/**
 * `directoryManifest`, synchronously. With `versionHash` false the checksum over all files is skipped (`sha256` is
 * ""): a checkpoint's manifest needs the files' hashes only.
 */
export function directoryManifestSync(dir: string, exclude: readonly string[] = [], versionHash = true): DirectoryManifest {
  const files: WeightFile[] = [];
  const whole = versionHash ? createHash("sha256") : undefined;
  for (const name of manifestNames(dir, exclude)) {
    const path = join(dir, name);
    const one = createHash("sha256");
    hashIntoSync(one, path, whole);
    files.push({ name, sizeBytes: statSync(path).size, sha256: one.digest("hex") });
  }
  return { files, sha256: whole?.digest("hex") ?? "" };
}

/**
 * Why `name` may not be written under a model directory, or undefined when it is a safe relative path: no absolute
 * paths, no "..", ".", empty or hidden segments, no backslashes or NUL (a manifest never places files outside the
 * directory it is received into).
 */
export function unsafeFileName(name: string): string | undefined {
  if (name.length === 0) return "empty";
  if (name.length > 1024) return "longer than 1024 characters";
  if (isAbsolute(name) || name.startsWith("/")) return "absolute";
  if (name.includes("\\") || name.includes("\0")) return "contains a backslash or NUL";
  for (const segment of name.split("/")) {
    if (segment === "" || segment === "." || segment === "..") return `has a "${segment}" segment`;
    if (segment.startsWith(".")) return "has a hidden segment";
  }
  if (basename(name) !== name.split("/").at(-1)) return "is not a plain path";
  return undefined;
}
