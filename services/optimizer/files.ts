/**
 * File plumbing shared by policy versions and checkpoints: SHA-256 of files (chunked, so a multi-GB model never sits
 * in memory twice), a directory's manifest in a fixed order, and atomic directory publication (write everything
 * into a temporary sibling, fsync, then one rename).
 */
import { createHash, randomBytes } from "node:crypto";
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { manifestOrder } from "../../lib/weights/manifest.js";

const CHUNK = 1 << 20;

/** Feeds the bytes of `path` into `hash`, 1 MiB at a time. */
function feed(hash: ReturnType<typeof createHash>, path: string): void {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    for (;;) {
      const n = readSync(fd, buf, 0, CHUNK, null);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
}

/** Hex SHA-256 of one file. */
export function sha256File(path: string): string {
  const hash = createHash("sha256");
  feed(hash, path);
  return hash.digest("hex");
}

/** Hex SHA-256 of the concatenated bytes of `paths`, in order (what a client hashing a GetWeights stream computes). */
export function sha256Concat(paths: readonly string[]): string {
  const hash = createHash("sha256");
  for (const p of paths) feed(hash, p);
  return hash.digest("hex");
}

export function sha256Bytes(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** One file of a manifest. */
export interface ManifestFile {
  /** Path relative to the directory, "/"-separated. */
  name: string;
  sizeBytes: number;
  sha256: string;
}

/**
 * Collects the regular files under `root/rel`. Symbolic links are neither files nor directories to a Dirent, so they
 * are never listed or followed: a manifest only covers what really lies inside the directory.
 */
function walk(root: string, rel: string, out: string[]): void {
  for (const entry of readdirSync(join(root, rel), { withFileTypes: true })) {
    const name = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isDirectory()) walk(root, name, out);
    else if (entry.isFile()) out.push(name);
  }
}

/**
 * The files of `dir` (recursively, minus `exclude`) with sizes and hashes, in lib/weights/manifest.ts's
 * `manifestOrder`: the HF model files first (LEADING_FILES), then the rest sorted by name. The order is part of the
 * contract: PolicyVersion.sha256 is the hash of the files' bytes concatenated in this order.
 */
export function manifestOf(dir: string, exclude: readonly string[] = []): ManifestFile[] {
  const names: string[] = [];
  walk(dir, "", names);
  const kept = names.filter((n) => !exclude.includes(n) && !basename(n).startsWith("."));
  return manifestOrder(kept).map((name) => {
    const path = join(dir, name);
    return { name, sizeBytes: statSync(path).size, sha256: sha256File(path) };
  });
}

/** fsyncs every file under `dir` and the directory itself, so that the rename publishes durable data. */
function syncTree(dir: string): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) syncTree(path);
    else if (entry.isFile()) {
      const fd = openSync(path, "r");
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  }
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Creates `target` atomically: `fill(tmp)` writes into a fresh hidden sibling directory, which is synced and then
 * renamed onto `target` (an existing `target` is removed first: republishing replaces). Readers see either no
 * directory or a complete one; a crash leaves at most a `.tmp-*` sibling, which `removeStaleTemps` cleans up.
 */
export function writeDirAtomic(target: string, fill: (tmp: string) => void): void {
  const parent = dirname(target);
  const tmp = join(parent, `.tmp-${basename(target)}-${process.pid}-${randomBytes(4).toString("hex")}`);
  mkdirSync(parent, { recursive: true });
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    fill(tmp);
    syncTree(tmp);
    if (existsSync(target)) rmSync(target, { recursive: true, force: true });
    renameSync(tmp, target);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** Removes `.tmp-*` directories that an interrupted `writeDirAtomic` left in `parent`. */
export function removeStaleTemps(parent: string): void {
  if (!existsSync(parent)) return;
  for (const entry of readdirSync(parent, { withFileTypes: true })) {
    if (entry.isDirectory() && entry.name.startsWith(".tmp-")) rmSync(join(parent, entry.name), { recursive: true, force: true });
  }
}
