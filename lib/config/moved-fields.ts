/**
 * Config fields that moved to a new place. A config written for the old place keeps working: the value is read at
 * its new place, and a warning (once per process and field) names the new place. Setting both places to different
 * values is an error naming both; to the same value, only the warning.
 *
 * Applied inside a section's schema (`withMovedFields`), so that config files, SPPO_* variables and programs that
 * parse a section directly all get it.
 */
import { z } from "zod";
import { log } from "../log.js";

/** A field of a section that moved: dotted paths inside the section ("temperature" → "sampling.temperature"). */
export interface MovedField {
  from: string;
  to: string;
}

type Tree = { [key: string]: unknown };

const isTree = (value: unknown): value is Tree => typeof value === "object" && value !== null && !Array.isArray(value);

const warned = new Set<string>();

/** Logs `message` once per process. */
function warnOnce(message: string, fields: { from: string; to: string }): void {
  if (warned.has(message)) return;
  warned.add(message);
  log.warn(fields, message);
}

/** The value at a dotted path of `tree`, or undefined. */
function at(tree: Tree, path: string[]): unknown {
  let node: unknown = tree;
  for (const key of path) node = isTree(node) ? node[key] : undefined;
  return node;
}

/** A copy of `tree` with `value` at `path` (the trees along the path copied, nothing else). */
function withValue(tree: Tree, path: string[], value: unknown): Tree {
  const [key, ...rest] = path;
  if (rest.length === 0) return { ...tree, [key]: value };
  return { ...tree, [key]: withValue(isTree(tree[key]) ? tree[key] : {}, rest, value) };
}

export interface MoveOutcome {
  /** The section with every moved value at its new place (the input is not modified). */
  value: unknown;
  /** Old places set while the new place holds another value: "from" and "to" with both values. */
  conflicts: { from: string; to: string; old: unknown; now: unknown }[];
  /** The moves made. */
  moved: MovedField[];
}

/** Moves the values set at old places of `section` (a config section as read) to their new places. */
export function moveFields(section: unknown, fields: readonly MovedField[]): MoveOutcome {
  const outcome: MoveOutcome = { value: section, conflicts: [], moved: [] };
  if (!isTree(section)) return outcome;
  let tree = section;
  for (const field of fields) {
    if (!(field.from in tree) || tree[field.from] === undefined) continue;
    const old = tree[field.from];
    const { [field.from]: _, ...rest } = tree;
    const to = field.to.split(".");
    const now = at(rest, to);
    if (now !== undefined && JSON.stringify(now) !== JSON.stringify(old)) outcome.conflicts.push({ ...field, old, now });
    tree = now === undefined ? withValue(rest, to, old) : rest;
    outcome.moved.push(field);
  }
  outcome.value = tree;
  return outcome;
}

/**
 * `schema` reading each of `fields` at its old place too: the value moves to its new place before validation, with a
 * warning naming the new place; both places set to different values is a validation error on the old one.
 */
export function withMovedFields<S extends z.ZodType>(section: string, fields: readonly MovedField[], schema: S) {
  return z.preprocess((input, ctx) => {
    const { value, conflicts, moved } = moveFields(input, fields);
    for (const c of conflicts) {
      ctx.addIssue({
        code: "custom",
        path: [c.from],
        message: `moved to ${section}.${c.to}, which is also set, to another value (${JSON.stringify(c.now)} there, ${JSON.stringify(c.old)} here): keep only ${section}.${c.to}`,
      });
    }
    for (const m of moved) {
      warnOnce(`config: ${section}.${m.from} is now ${section}.${m.to}; the old name is still read, but move it there`, { from: `${section}.${m.from}`, to: `${section}.${m.to}` });
    }
    return value;
  }, schema);
}
