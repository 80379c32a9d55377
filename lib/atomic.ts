/**
 * The one atomic writer: a file or a directory is written into a hidden temporary sibling (`.tmp-<name>-<pid>-<hex>`),
 * synced, then renamed onto its target, so that a reader sees either nothing (or the previous version) or the whole
 * new one, never a part. A crash leaves at most a `.tmp-*` sibling, which `removeStaleTemps` clears at the next start.
 *
 * Users: policy versions and checkpoints (services/optimizer), pulled weights (lib/weights/pull.ts), the run's own
 * files (pipeline/run.ts). Tests: test/lib/atomic.test.ts.
 */
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { mkdir, open, readdir, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

const TEMP_PREFIX = ".tmp-";

/** A fresh hidden sibling of `target` to write into before the rename. */
export function tempSiblingOf(target: string): string {
  return join(dirname(target), `${TEMP_PREFIX}${basename(target)}-${process.pid}-${randomBytes(4).toString("hex")}`);
}

function fsyncPath(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** fsyncs every file under `dir` and the directory itself, so that the rename publishes durable data. */
function syncTree(dir: string): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) syncTree(path);
    else if (entry.isFile()) fsyncPath(path);
  }
  fsyncPath(dir);
}

async function fsyncPathAsync(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function syncTreeAsync(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await syncTreeAsync(path);
    else if (entry.isFile()) await fsyncPathAsync(path);
  }
  await fsyncPathAsync(dir);
}

/**
 * Creates the directory `target` atomically: `fill(tmp)` writes into a fresh temporary sibling, which is synced and
 * renamed onto `target` (an existing `target` is replaced). On any failure the temporary directory is removed and
 * `target` is left as it was.
 */
export function writeDirAtomic(target: string, fill: (tmp: string) => void): void {
  const tmp = tempSiblingOf(target);
  mkdirSync(dirname(target), { recursive: true });
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
  fsyncPath(dirname(target));
}

/**
 * `writeDirAtomic` for a filler that works asynchronously (a weight stream arriving over gRPC): the event loop stays
 * free while the files are written and synced.
 */
export async function writeDirAtomicAsync<T>(target: string, fill: (tmp: string) => Promise<T>): Promise<T> {
  const tmp = tempSiblingOf(target);
  await mkdir(dirname(target), { recursive: true });
  await mkdir(tmp);
  let result: T;
  try {
    result = await fill(tmp);
    await syncTreeAsync(tmp);
    await rm(target, { recursive: true, force: true });
    await rename(tmp, target);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  await fsyncPathAsync(dirname(target));
  return result;
}

/** Writes the file `path` atomically (temporary sibling, fsync, rename): readers never see half of it. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = tempSiblingOf(path);
  try {
    writeFileSync(tmp, data);
    fsyncPath(tmp);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/** Removes the `.tmp-*` files and directories that an interrupted atomic write left in `parent` (absent: nothing). */
export function removeStaleTemps(parent: string): void {
  if (!existsSync(parent)) return;
  for (const entry of readdirSync(parent, { withFileTypes: true })) {
    if (entry.name.startsWith(TEMP_PREFIX) && (entry.isDirectory() || entry.isFile())) rmSync(join(parent, entry.name), { recursive: true, force: true });
  }
}
