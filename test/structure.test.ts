/**
 * The rules of STYLE.md and CONTRIBUTING.md that a reader can check by reading the sources, checked here so that they
 * stay true: imports follow the layering, no production file grows past 500 lines, production code throws RpcErrors
 * only, and `sppo`'s start-up loads no heavy package. Reads files only (no process, no network).
 * Run: node --import tsx --test test/structure.test.ts
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Production code, lowest layer first: a file may import its own layer and the ones before it, never after. */
const LAYERS = ["gen", "lib", "models", "services", "pipeline", "cli"] as const;
/** Folders production code never imports: they are built on it (or beside it), not under it. */
const NOT_IMPORTED = ["scripts", "bench", "test", "examples", "deploy", "bin"];

function sourcesUnder(dir: string): string[] {
  const abs = join(ROOT, dir);
  if (!existsSync(abs)) return [];
  return readdirSync(abs, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && /\.(ts|mts|mjs|js)$/.test(e.name) && !e.name.endsWith(".d.ts"))
    .map((e) => relative(ROOT, join(e.parentPath, e.name)))
    .sort();
}

const production = LAYERS.flatMap((layer) => sourcesUnder(layer));
/** The page's scripts run in the browser: no imports of the project's modules. */
const handWritten = production.filter((f) => !f.startsWith("gen/"));

interface ImportRef {
  specifier: string;
  /** `import type ...`, or every name imported is `type X`: erased when the file is compiled. */
  typeOnly: boolean;
  /** `import("...")`: loaded when the code runs, not with the file. */
  dynamic: boolean;
}

/** The modules a source file names (static imports and re-exports, side-effect imports, dynamic imports). */
function importsOf(file: string): ImportRef[] {
  // Comments out first, so that an example in a comment is not an import.
  const text = readFileSync(join(ROOT, file), "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`\\])\/\/.*$/gm, "$1");
  const refs: ImportRef[] = [];
  for (const m of text.matchAll(/(?:^|[;\n])\s*(import|export)\s+(type\s+)?([^;'"]*?)\s*from\s*["']([^"']+)["']/g)) {
    const names = m[3].match(/\{([\s\S]*)\}/)?.[1].split(",").map((s) => s.trim()).filter(Boolean);
    const allTypes = names !== undefined && names.length > 0 && !/^[\w$]/.test(m[3].replace(/\{[\s\S]*\}/, "").trim()) && names.every((n) => n.startsWith("type "));
    refs.push({ specifier: m[4], typeOnly: m[2] !== undefined || allTypes, dynamic: false });
  }
  for (const m of text.matchAll(/(?:^|[;\n])\s*import\s*["']([^"']+)["']/g)) refs.push({ specifier: m[1], typeOnly: false, dynamic: false });
  for (const m of text.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)) refs.push({ specifier: m[1], typeOnly: false, dynamic: true });
  return refs;
}

/** A relative specifier → the repository file it names (`./x.js` is `./x.ts` under tsx), else undefined. */
function resolveRelative(from: string, specifier: string): string | undefined {
  if (!specifier.startsWith(".")) return undefined;
  const target = relative(ROOT, resolve(ROOT, dirname(from), specifier));
  const candidates = [target, target.replace(/\.js$/, ".ts"), target.replace(/\.mjs$/, ".mts"), `${target}.ts`, join(target, "index.ts")];
  return candidates.find((c) => existsSync(join(ROOT, c)) && !c.endsWith("/")) ?? target;
}

const topFolder = (file: string) => file.split("/")[0];

/** The npm package a bare specifier names (`@scope/name/sub` → `@scope/name`); undefined for node's own modules. */
function packageOf(specifier: string): string | undefined {
  if (specifier.startsWith("node:") || specifier.startsWith(".")) return undefined;
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
}

describe("the layering (gen ← lib ← models ← services ← pipeline ← cli)", () => {
  it("no production file imports a layer above its own, nor scripts/, bench/, test/", () => {
    const wrong: string[] = [];
    for (const file of production) {
      const own = LAYERS.indexOf(topFolder(file) as (typeof LAYERS)[number]);
      for (const ref of importsOf(file)) {
        const target = resolveRelative(file, ref.specifier);
        if (target === undefined) continue;
        const layer = LAYERS.indexOf(topFolder(target) as (typeof LAYERS)[number]);
        if (layer > own || NOT_IMPORTED.includes(topFolder(target)) || target.startsWith("..")) wrong.push(`${file} imports ${ref.specifier} (${target})`);
      }
    }
    assert.deepEqual(wrong, [], "import only from your own layer or one below it (CONTRIBUTING.md, Layout)");
  });

  it("the check sees imports of every form", () => {
    // The parser this file relies on, on the forms the sources use (a check that sees nothing passes everything).
    const refs = importsOf("cli/commands/serve.ts");
    assert.ok(refs.some((r) => r.specifier === "commander" && !r.typeOnly && !r.dynamic));
    assert.ok(refs.some((r) => r.specifier === "../../lib/config/schema.js" && r.typeOnly));
    assert.ok(refs.some((r) => r.specifier === "../../services/index.js" && r.dynamic));
    assert.ok(importsOf("services/index.ts").some((r) => r.specifier === "../lib/config/default-ports.js" && r.typeOnly));
  });
});

describe("file sizes", () => {
  it("no hand-written production file is over 500 lines (STYLE.md)", () => {
    const long = handWritten
      .map((file) => ({ file, lines: readFileSync(join(ROOT, file), "utf8").split("\n").length - 1 }))
      .filter((f) => f.lines > 500)
      .map((f) => `${f.file}: ${f.lines} lines`);
    assert.deepEqual(long, [], "split the file by concept (one concept per file, named after its export)");
  });
});

describe("errors", () => {
  it("production code throws RpcErrors (lib/errors.ts), never a bare Error", () => {
    const bare: string[] = [];
    for (const file of handWritten) {
      for (const [i, line] of readFileSync(join(ROOT, file), "utf8").split("\n").entries()) {
        if (/\bthrow\s+new\s+Error\s*\(/.test(line)) bare.push(`${file}:${i + 1}: ${line.trim()}`);
      }
    }
    assert.deepEqual(bare, [], "throw new RpcError(Code.X, ...) (or kindError/invalidArgument): the code says whose fault it is");
  });

  it("no other class of error, and no userFacing flag set by hand", () => {
    const found: string[] = [];
    for (const file of handWritten) {
      for (const [i, line] of readFileSync(join(ROOT, file), "utf8").split("\n").entries()) {
        const isTheClass = file === "lib/errors.ts" && /^export class RpcError extends Error \{/.test(line);
        if ((/\bclass\s+\w+\s+extends\s+(Error|RpcError|TypeError|RangeError)\b/.test(line) && !isTheClass) || /\buserFacing\s*[:=](?!=)/.test(line)) {
          found.push(`${file}:${i + 1}: ${line.trim()}`);
        }
      }
    }
    assert.deepEqual(found, [], "one error class: RpcError, with a kind where callers tell errors apart");
  });
});

describe("sppo's start-up", () => {
  /** Every file `node bin/sppo.mjs` loads before a command's action runs: static, non-type imports from cli/main.ts. */
  function startupClosure(): { files: string[]; packages: Map<string, string> } {
    const files = new Set<string>();
    const packages = new Map<string, string>();
    const visit = (file: string) => {
      if (files.has(file)) return;
      files.add(file);
      for (const ref of importsOf(file)) {
        if (ref.typeOnly || ref.dynamic) continue;
        const target = resolveRelative(file, ref.specifier);
        if (target !== undefined) visit(target);
        else {
          const name = packageOf(ref.specifier);
          if (name !== undefined && !packages.has(name)) packages.set(name, file);
        }
      }
    };
    visit("cli/main.ts");
    return { files: [...files].sort(), packages };
  }

  it("declaring the commands loads commander alone: every other package is imported inside a command's action", () => {
    const { files, packages } = startupClosure();
    assert.ok(files.includes("cli/commands/serve.ts") && files.includes("cli/commands/run.ts"), "the closure reaches the commands");
    const heavy = [...packages].filter(([name]) => name !== "commander").map(([name, file]) => `${name} (imported by ${file})`);
    assert.deepEqual(heavy, [], "`sppo --help` and a mistyped flag must not load tfjs, onnxruntime, grpc-js or zod (cli/main.ts)");
  });
});
