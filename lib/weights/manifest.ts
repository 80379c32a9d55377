/**
 * The file list of a policy version, shared by the side that serves weights (the optimizer's GetWeights) and the
 * side that pulls them (the generator's LoadPolicy), so that both agree on names, order and hashes.
 *
 * The order is part of the contract (common.proto PolicyVersion.sha256): the Hugging Face model files first
 * (config.json, model.safetensors, tokenizer.json, tokenizer_config.json; services/optimizer/files.ts `manifestOf`
 * sorts with `manifestOrder` too), then every other file sorted by name. The version's SHA-256 is the hash
 * of the files' bytes concatenated in that order.
 */
import { createHash, type Hash } from "node:crypto";
import { open, readdir, stat } from "node:fs/promises";
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

/** Hex SHA-256 of one file. */
export async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  await hashInto(hash, path);
  return hash.digest("hex");
}

/**
 * Hex SHA-256 of the files of `dir` named by `files`, concatenated in order: the version's checksum. A name that
 * leads outside `dir` throws UnsafePathError (lib/paths.ts) before anything is read.
 */
export async function versionSha256(dir: string, files: readonly Pick<WeightFile, "name">[]): Promise<string> {
  const paths = files.map((f, i) => confinedPath(dir, f.name, `files[${i}].name`));
  const hash = createHash("sha256");
  for (const path of paths) await hashInto(hash, path);
  return hash.digest("hex");
}

async function walk(root: string, rel: string, out: string[]): Promise<void> {
  for (const entry of await readdir(join(root, rel), { withFileTypes: true })) {
    if (entry.name.startsWith(".")) continue; // temporaries and editor files are never part of a version
    const name = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isDirectory()) await walk(root, name, out);
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

/**
 * The files of the model directory `dir` (recursively; hidden files and `exclude` left out) in manifest order, with
 * sizes and hashes, and the version checksum over them.
 */
export async function directoryManifest(dir: string, exclude: readonly string[] = []): Promise<{ files: WeightFile[]; sha256: string }> {
  const names: string[] = [];
  await walk(dir, "", names);
  const files: WeightFile[] = [];
  const whole = createHash("sha256");
  for (const name of manifestOrder(names.filter((n) => !exclude.includes(n)))) {
    const path = join(dir, name);
    const one = createHash("sha256");
    await hashInto(one, path, whole);
    files.push({ name, sizeBytes: (await stat(path)).size, sha256: one.digest("hex") });
  }
  return { files, sha256: whole.digest("hex") };
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
