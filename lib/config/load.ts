/**
 * Loads the configuration: defaults ← file (YAML or JSON) ← environment ← flags, each layer overriding the one
 * before it, then validated once against `configSchema`. An invalid value fails here, at start-up, with the file,
 * the field and the reason.
 *
 * Environment variables: SPPO_<SECTION>__<FIELD>=value, nested with "__" and camelCase fields written in
 * SCREAMING_SNAKE_CASE, e.g. SPPO_SERVER__PORT=50151 or SPPO_SERVER__MAX_MESSAGE_BYTES=1048576. Values are parsed
 * as JSON where they parse (numbers, booleans, arrays), else taken as strings.
 */
import { readFileSync } from "node:fs";
import { extname } from "node:path";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { type Config, configSchema } from "./schema.js";
import { kindError } from "../errors.js";

type Tree = { [key: string]: unknown };

function isTree(value: unknown): value is Tree {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Deep merge where `over` wins; arrays are replaced, not merged. */
export function mergeConfig(base: Tree, over: Tree): Tree {
  const out: Tree = { ...base };
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined) continue;
    out[key] = isTree(value) && isTree(out[key]) ? mergeConfig(out[key] as Tree, value) : value;
  }
  return out;
}

/** Reads a YAML or JSON config file into a plain object (validation happens later, over all layers). */
export function readConfigFile(path: string): Tree {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw kindError("config", `config file ${path}: cannot read it (${(err as Error).message})`);
  }
  let data: unknown;
  try {
    data = extname(path).toLowerCase() === ".json" ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw kindError("config", `config file ${path}: not valid ${extname(path) === ".json" ? "JSON" : "YAML"}: ${(err as Error).message}`);
  }
  if (data === null || data === undefined) return {};
  if (!isTree(data)) throw kindError("config", `config file ${path}: the top level must be a mapping of sections`);
  return data;
}

const snakeToCamel = (s: string) => s.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** SPPO_SECTION__FIELD=value variables as a config tree. */
export function configFromEnv(env: NodeJS.ProcessEnv): Tree {
  const out: Tree = {};
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith("SPPO_") || raw === undefined || !name.includes("__")) continue;
    const path = name.slice("SPPO_".length).split("__").map(snakeToCamel);
    let value: unknown = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      // a plain string
    }
    let node = out;
    for (const key of path.slice(0, -1)) node = (node[key] = isTree(node[key]) ? node[key] : {}) as Tree;
    node[path[path.length - 1]] = value;
  }
  return out;
}

function describeIssues(issues: z.core.$ZodIssue[], source: string): string {
  return issues
    .map((issue) => {
      const field = issue.path.length > 0 ? issue.path.join(".") : "(top level)";
      return `${source}: field ${field}: ${issue.message}`;
    })
    .join("\n");
}

export interface LoadConfigOptions {
  /** Path of a YAML/JSON file. */
  file?: string;
  /** Environment to read SPPO_* variables from. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Overrides from command-line flags, as a config tree. */
  overrides?: Tree;
}

/** Builds the validated configuration; throws a "config" RpcError naming the source, field and reason. */
export function loadConfig(options: LoadConfigOptions = {}): Config {
  const fromFile = options.file ? readConfigFile(options.file) : {};
  if (options.file) {
    // Validate the file alone first so that its errors name the file.
    const fileCheck = configSchema.safeParse(fromFile);
    if (!fileCheck.success) throw kindError("config", describeIssues(fileCheck.error.issues, `config file ${options.file}`));
  }
  const fromEnv = configFromEnv(options.env ?? process.env);
  if (Object.keys(fromEnv).length > 0) {
    const envCheck = configSchema.safeParse(mergeConfig(fromFile, fromEnv));
    if (!envCheck.success) throw kindError("config", describeIssues(envCheck.error.issues, "environment (SPPO_* variables)"));
  }
  const merged = mergeConfig(mergeConfig(fromFile, fromEnv), options.overrides ?? {});
  const result = configSchema.safeParse(merged);
  if (!result.success) throw kindError("config", describeIssues(result.error.issues, "command-line flags"));
  return result.data;
}
