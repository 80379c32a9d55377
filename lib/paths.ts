/**
 * Confining file names that come from outside (a remote peer's weight manifest, a checkpoint's manifest.json, a model
 * directory's config) to the directory they are joined to, so that a malicious or damaged list can neither write nor
 * read anything outside it. Run the tests with `node --import tsx --test test/lib/paths.test.ts`.
 */
import { realpathSync } from "node:fs";
import { dirname, isAbsolute, relative, resolve, sep } from "node:path";
import { kindError } from "./errors.js";

/** Whether `path` is `root` itself or below it (both absolute and normalised). */
function within(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** The real path of `path`'s deepest existing ancestor (itself included) at or below `root`; undefined if none exists. */
function realAncestor(root: string, path: string): string | undefined {
  for (let p = path; within(root, p); p = dirname(p)) {
    try {
      return realpathSync(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "ENOTDIR") throw err;
    }
    if (p === root) break;
  }
  return undefined;
}

/**
 * The absolute path of `name` under `root`, for a `name` that came from outside. Throws an RpcError of kind "unsafe-path" (DATA_LOSS) on field
 * `what` (e.g. "manifest.files[2].name"), the name and the root, when `name` is empty, contains NUL, is absolute,
 * leads outside `root` lexically (`../x`, `a/../../x`) or names `root` itself, or when an existing path along the way
 * is a symbolic link that resolves outside `root` (the real path of the deepest existing ancestor is checked, so a
 * file about to be created is judged by the directory it will land in). `..` segments that stay inside are accepted.
 *
 * Only the names are checked here; a symlink created after the call is the filesystem's owner's business.
 */
export function confinedPath(root: string, name: string, what: string): string {
  const base = resolve(root);
  const refuse = (why: string): never => {
    throw kindError("unsafe-path", `${what}: ${JSON.stringify(name)} ${why} (a file name must stay inside ${base})`, { field: what });
  };
  if (name.length === 0) refuse("is empty");
  if (name.includes("\0")) refuse("contains a NUL byte");
  if (isAbsolute(name) || /^[\\/]|^[A-Za-z]:/.test(name)) refuse("is an absolute path");
  const path = resolve(base, name);
  if (path === base) refuse("names the directory itself");
  if (!within(base, path)) refuse("leads outside the directory");
  let real: string | undefined;
  try {
    real = realAncestor(base, path);
  } catch (err) {
    refuse(`cannot be resolved (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (real !== undefined && !within(realpathSync(base), real)) refuse(`leads outside the directory through a symbolic link (to ${real})`);
  return path;
}
