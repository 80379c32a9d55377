/**
 * No drift between the `sppo` command line and what ships it: the Dockerfiles (linted with dockerfile-utils, parsed
 * with dockerfile-ast), package.json's start script, the manifests' container args, and the commands shown in
 * docs/deploy.md, docs/pipeline.md and README.md must all name `sppo` subcommands, arguments and flags that the CLI
 * defines, as its own `--help` reports them. The image must also carry every source folder the CLI imports.
 *
 *   node --import tsx --test test/deploy/commands.test.ts
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { DockerfileParser, type Dockerfile } from "dockerfile-ast";
import { validate as lintDockerfile } from "dockerfile-utils";
import { DEFAULT_METRICS_PORTS } from "../../lib/config/server.js";
import { configSchema } from "../../lib/config/schema.js";
import { defaultPorts } from "../../services/index.js";
import { expandedArgs, idOf, mainContainer, overlays, render, repoRoot, workloads } from "./render.js";

const execFileAsync = promisify(execFile);
// @balena/dockerignore (Docker's own .dockerignore rules) is CommonJS with `module.exports = factory`; its types
// declare a default export, which NodeNext does not map onto module.exports.
const dockerignore = createRequire(import.meta.url)("@balena/dockerignore") as typeof import("@balena/dockerignore").default;
const read = (path: string) => readFileSync(join(repoRoot, path), "utf8");
const packageJson = JSON.parse(read("package.json")) as { version: string; bin: Record<string, string>; scripts: Record<string, string> };

// ---- the CLI, as its --help describes it --------------------------------------------------------------------

interface OptionSpec {
  /** "--port" */
  long: string;
  short?: string;
  /** "required": `--port <n>`; "optional": `--x [v]`; "none": a switch. */
  value: "required" | "optional" | "none";
}
interface ArgumentSpec {
  name: string;
  required: boolean;
  variadic: boolean;
  choices?: string[];
}
interface CommandSpec {
  name: string;
  options: OptionSpec[];
  arguments: ArgumentSpec[];
}

async function sppoHelp(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(process.execPath, [join(repoRoot, packageJson.bin.sppo), ...args, "--help"], {
    cwd: repoRoot,
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" },
  });
  return stdout;
}

/** The entries of one section of commander's help ("Options:"), continuation lines joined to their entry. */
export function helpSection(help: string, title: string): string[] {
  const lines = help.split("\n");
  const start = lines.indexOf(`${title}:`);
  if (start < 0) return [];
  const entries: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.trim() === "" || !line.startsWith(" ")) break;
    if (/^ {2}\S/.test(line)) entries.push(line.trim());
    else if (entries.length > 0) entries[entries.length - 1] += ` ${line.trim()}`;
  }
  return entries;
}

/** Parses `sppo CMD --help` (commander's format) into the command's arguments and options. */
export function parseCommandHelp(name: string, help: string): CommandSpec {
  const usage = /^Usage: \S+ \S+ (.*)$/m.exec(help)?.[1] ?? "";
  const argumentsInUsage = [...usage.matchAll(/([<[])([^>\]]+?)(\.\.\.)?[>\]]/g)].filter((m) => m[2] !== "options");
  const described = new Map(
    helpSection(help, "Arguments").map((entry) => {
      const [argName] = entry.split(/\s+/);
      const choices = /\(choices: ([^)]*)\)/.exec(entry)?.[1];
      return [argName, choices ? [...choices.matchAll(/"([^"]*)"/g)].map((m) => m[1]) : undefined] as const;
    }),
  );
  const args: ArgumentSpec[] = argumentsInUsage.map((m) => ({
    name: m[2],
    required: m[1] === "<",
    variadic: m[3] === "...",
    choices: described.get(m[2]),
  }));
  const options: OptionSpec[] = helpSection(help, "Options").map((entry) => {
    const flags = /^((?:-\w, )?--[\w-]+)(?: (<[^>]+>|\[[^\]]+\]))?/.exec(entry);
    assert.ok(flags, `sppo ${name} --help: cannot read the option line "${entry}"`);
    const short = /^(-\w), /.exec(flags[1])?.[1];
    const long = flags[1].replace(/^-\w, /, "");
    return { long, short, value: flags[2]?.startsWith("<") ? "required" : flags[2] ? "optional" : "none" };
  });
  return { name, options, arguments: args };
}

/** The program's own options (`sppo --help`), under this key of the command map. */
const topLevel = "";

/**
 * The subcommands `sppo --help` lists, under their names, and the program's own options under "". Of the
 * subcommands, those named in `used` have their own --help read (arguments, options); the others map to undefined.
 */
async function cli(used: Iterable<string>): Promise<Map<string, CommandSpec | undefined>> {
  const help = await sppoHelp([]);
  const names = helpSection(help, "Commands")
    .map((entry) => entry.split(/\s+/)[0])
    .filter((name) => name !== "help");
  const usedNames = new Set(used);
  const wanted = names.filter((name) => usedNames.has(name));
  const helps = await Promise.all(wanted.map((name) => sppoHelp([name])));
  const commands = new Map<string, CommandSpec | undefined>(names.map((name) => [name, undefined]));
  for (const [i, name] of wanted.entries()) commands.set(name, parseCommandHelp(name, helps[i]));
  commands.set(topLevel, { ...parseCommandHelp(topLevel, help), arguments: [] });
  return commands;
}

/** Problems with one `sppo` invocation (argv after `sppo`), or [] when the CLI accepts its shape. */
export function checkInvocation(argv: string[], commands: Map<string, CommandSpec | undefined>): string[] {
  // `sppo --help`, `sppo --version`: options of the program itself.
  const [name, ...rest] = argv[0]?.startsWith("-") ? [topLevel, ...argv] : argv;
  const command = commands.get(name);
  if (!commands.has(name)) {
    const names = [...commands.keys()].filter((n) => n !== topLevel);
    return [`"${name}" is not an sppo command (sppo --help lists: ${names.join(", ")})`];
  }
  if (!command) throw new Error(`sppo ${name} --help was not read`);
  const problems: string[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const token = rest[i];
    if (!token.startsWith("-") || token === "-") {
      positionals.push(token);
      continue;
    }
    const [flag, inline] = token.split(/=(.*)/s, 2);
    const option = command.options.find((o) => o.long === flag || o.short === flag);
    if (!option) {
      problems.push(`sppo ${name}: unknown option ${flag}`);
      continue;
    }
    if (option.value === "none" && inline !== undefined) problems.push(`sppo ${name}: ${flag} takes no value`);
    if (option.value === "required" && inline === undefined) {
      const value = rest[i + 1];
      if (value === undefined || value.startsWith("--")) problems.push(`sppo ${name}: ${flag} needs a value`);
      else i++;
    }
  }
  const variadic = command.arguments.some((a) => a.variadic);
  if (!variadic && positionals.length > command.arguments.length) {
    problems.push(`sppo ${name}: unexpected argument(s) ${positionals.slice(command.arguments.length).join(" ")}`);
  }
  command.arguments.forEach((spec, index) => {
    const value = positionals[index];
    if (value === undefined) {
      if (spec.required) problems.push(`sppo ${name}: missing <${spec.name}>`);
    } else if (spec.choices && !spec.choices.includes(value)) {
      problems.push(`sppo ${name}: ${spec.name} "${value}" is not one of ${spec.choices.join(", ")}`);
    }
  });
  return problems;
}

// ---- where commands are written ------------------------------------------------------------------------------

interface Invocation {
  /** Where it was found, for messages. */
  source: string;
  argv: string[];
}

const dockerfiles = ["Dockerfile", "Dockerfile.gpu"];
const parseDockerfile = (path: string): Dockerfile => DockerfileParser.parse(read(path));

/** The exec-form words of the last instruction of a kind in the final stage (the one the image runs with). */
function execForm(dockerfile: Dockerfile, keyword: "ENTRYPOINT" | "CMD", path: string): string[] {
  const instructions = keyword === "CMD" ? dockerfile.getCMDs() : dockerfile.getENTRYPOINTs();
  const last = instructions.at(-1);
  assert.ok(last, `${path} has a ${keyword}`);
  const words = last.getJSONStrings().map((s) => s.getJSONValue());
  assert.ok(words.length > 0, `${path}: ${keyword} is in exec (JSON) form, so that sppo is PID 1 and gets SIGTERM`);
  return words;
}

/**
 * Commands in fenced shell blocks of a Markdown file: `sppo ...`, `npx sppo ...`, `docker run ... sppo:TAG ARGS` and
 * `kubectl run ... --image=sppo:TAG ... -- ARGS`.
 */
export function invocationsInMarkdown(path: string, text: string): Invocation[] {
  const out: Invocation[] = [];
  // Fenced blocks, read line by line: ``` or ~~~ opens (with an info string) and closes.
  const blocks: string[] = [];
  let fence: { marker: string; shell: boolean; lines: string[] } | undefined;
  for (const line of text.split("\n")) {
    const opener = /^\s*(`{3,}|~{3,})\s*([\w-]*)/.exec(line);
    if (!fence && opener) fence = { marker: opener[1], shell: ["", "sh", "bash", "shell", "console"].includes(opener[2]), lines: [] };
    else if (fence && line.trim().startsWith(fence.marker) && line.trim().replaceAll(fence.marker[0], "") === "") {
      if (fence.shell) blocks.push(fence.lines.join("\n"));
      fence = undefined;
    } else fence?.lines.push(line);
  }
  for (const block of blocks) {
    for (const raw of block.replace(/\\\n\s*/g, " ").split("\n")) {
      const line = raw.replace(/^\s*\$\s+/, "").replace(/\s+#.*$/, "").trim();
      const words = line.split(/\s+/).filter((w) => w !== "");
      let at = -1;
      if (words[0] === "sppo") at = 1;
      else if (words[0] === "npx" && words[1] === "sppo") at = 2;
      else if (words[0] === "docker" && words[1] === "run") {
        const image = words.findIndex((w, i) => i > 1 && /^(?:[\w.-]+(?::\d+)?\/)*sppo:[\w.-]+$/.test(w));
        if (image > 0 && image < words.length - 1) at = image + 1;
      } else if (words[0] === "kubectl" && words.includes("run") && words.some((w) => /^--image=(?:[\w.-]+(?::\d+)?\/)*sppo:[\w.-]+$/.test(w))) {
        const dashes = words.indexOf("--");
        if (dashes > 0) at = dashes + 1;
      }
      if (at > 0 && words.length > at) out.push({ source: `${path}: ${line}`, argv: words.slice(at) });
    }
  }
  return out;
}

function allInvocations(): Invocation[] {
  const out: Invocation[] = [];
  for (const path of dockerfiles) {
    out.push({ source: `${path} CMD`, argv: execForm(parseDockerfile(path), "CMD", path) });
  }
  for (const [script, line] of Object.entries(packageJson.scripts)) {
    const match = new RegExp(`(?:^|&&\\s*)node ${packageJson.bin.sppo.replace(/\./g, "\\.")}((?: [^&|;]+)?)`).exec(line);
    if (match) out.push({ source: `package.json scripts.${script}`, argv: match[1].trim().split(/\s+/) });
  }
  for (const build of [...overlays.map((o) => `deploy/overlays/${o}`), "test/deploy/kustomize/all-components"]) {
    for (const workload of workloads(render(build))) {
      out.push({ source: `${build} ${idOf(workload.object)}`, argv: expandedArgs(mainContainer(workload)) });
    }
  }
  for (const path of ["docs/deploy.md", "docs/pipeline.md", "README.md"]) {
    if (existsSync(join(repoRoot, path))) out.push(...invocationsInMarkdown(path, read(path)));
  }
  return out;
}

// ---- tests ---------------------------------------------------------------------------------------------------

describe("reading commands", () => {
  const serveHelp = [
    "Usage: sppo serve [options] <service>",
    "",
    "Arguments:",
    '  service          the service (choices: "generator",',
    '                   "oracle")',
    "",
    "Options:",
    "  --port <n>       gRPC port",
    "  -v, --verbose    talk",
    "  --level [n]      optional value",
    "  -h, --help       display help for command",
    "",
  ].join("\n");

  test("commander's help, wrapped lines included", () => {
    const spec = parseCommandHelp("serve", serveHelp);
    assert.deepEqual(spec.arguments, [{ name: "service", required: true, variadic: false, choices: ["generator", "oracle"] }]);
    assert.deepEqual(spec.options.map((o) => [o.long, o.short, o.value]), [
      ["--port", undefined, "required"],
      ["--verbose", "-v", "none"],
      ["--level", undefined, "optional"],
      ["--help", "-h", "none"],
    ]);
  });

  test("an invocation is checked against the command's arguments and options", () => {
    const commands = new Map<string, CommandSpec | undefined>([["serve", parseCommandHelp("serve", serveHelp)]]);
    assert.deepEqual(checkInvocation(["serve", "oracle", "--port", "1"], commands), []);
    assert.deepEqual(checkInvocation(["serve", "generator", "--port=1", "-v"], commands), []);
    assert.match(checkInvocation(["serve", "optimizer"], commands).join(), /not one of/);
    assert.match(checkInvocation(["serve"], commands).join(), /missing <service>/);
    assert.match(checkInvocation(["serve", "oracle", "--prot", "1"], commands).join(), /unknown option --prot/);
    assert.match(checkInvocation(["serve", "oracle", "--port"], commands).join(), /needs a value/);
    assert.match(checkInvocation(["serve", "oracle", "extra"], commands).join(), /unexpected/);
    assert.match(checkInvocation(["train"], commands).join(), /not an sppo command/);
    commands.set("", { name: "", arguments: [], options: [{ long: "--help", short: "-h", value: "none" }] });
    assert.deepEqual(checkInvocation(["--help"], commands), []);
    assert.match(checkInvocation(["--verbose"], commands).join(), /unknown option --verbose/);
  });

  test("commands in Markdown shell blocks", () => {
    const md = [
      "text sppo run is not in a block",
      "```sh",
      "sppo watch 127.0.0.1:50054   # comment",
      "$ npx sppo serve oracle \\",
      "    --port 50052",
      "docker run --rm -p 1:1 registry.example:5000/team/sppo:0.1.0 serve generator",
      "kubectl -n sppo run w --rm --image=sppo:0.1.0 --overrides='{}' -- watch dns:///sppo-loop:50054",
      "kubectl run x --image=busybox -- sppo run",
      "kubectl get pods",
      "```",
      "```yaml",
      "sppo: not a command",
      "```",
      "```text",
      "  sppo run ── a diagram",
      "```",
    ].join("\n");
    assert.deepEqual(
      invocationsInMarkdown("x.md", md).map((i) => i.argv),
      [["watch", "127.0.0.1:50054"], ["serve", "oracle", "--port", "50052"], ["serve", "generator"], ["watch", "dns:///sppo-loop:50054"]],
    );
  });
});

describe("the sppo commands that ship", () => {
  test("every command the Dockerfiles, package.json, manifests and docs run is one the CLI defines", async () => {
    const invocations = allInvocations();
    const commands = await cli(invocations.map((i) => i.argv[0]));
    for (const name of ["serve", "run", "watch"]) assert.ok(commands.has(name), `sppo --help lists ${name}`);
    const fromDocs = invocations.filter((i) => i.source.startsWith("docs/deploy.md"));
    assert.ok(fromDocs.length >= 4, `docs/deploy.md shows sppo commands (found ${fromDocs.map((i) => i.argv.join(" "))})`);
    const problems = invocations.flatMap((i) => checkInvocation(i.argv, commands).map((p) => `${i.source}: ${p}`));
    assert.deepEqual(problems, []);
  });

  test("the images run the package's sppo bin, and by default what `npm start` runs", () => {
    const start = /^node (\S+) (.*)$/.exec(packageJson.scripts.start);
    assert.ok(start, "npm start runs node on the sppo bin");
    assert.equal(start[1], packageJson.bin.sppo);
    for (const path of dockerfiles) {
      const dockerfile = parseDockerfile(path);
      const workdir = dockerfile.getInstructions().filter((i) => i.getKeyword() === "WORKDIR").at(-1)?.getArgumentsContent();
      assert.equal(workdir, "/app", `${path} WORKDIR`);
      assert.deepEqual(execForm(dockerfile, "ENTRYPOINT", path), ["node", resolve("/app", packageJson.bin.sppo)], `${path} ENTRYPOINT`);
      assert.deepEqual(execForm(dockerfile, "CMD", path), start[2].split(" "), `${path} CMD is npm start's command`);
    }
  });

  test("the images run as a numeric non-root user and expose the services' ports", () => {
    const defaults = configSchema.parse({});
    const expected = [...Object.values(defaultPorts), defaults.pipeline.telemetryPort, ...Object.values(DEFAULT_METRICS_PORTS)].sort((a, b) => a - b);
    for (const path of dockerfiles) {
      const instructions = parseDockerfile(path).getInstructions();
      const lastStage = instructions.slice(instructions.map((i) => i.getKeyword()).lastIndexOf("FROM"));
      const user = lastStage.filter((i) => i.getKeyword() === "USER").at(-1)?.getArgumentsContent();
      assert.ok(user, `${path}: the runtime stage sets USER`);
      const [uid, gid] = user.split(":").map(Number);
      assert.ok(Number.isInteger(uid) && uid > 0, `${path}: USER ${user} is a numeric non-root uid (Kubernetes checks runAsNonRoot by number)`);
      assert.ok(gid === undefined || (Number.isInteger(gid) && gid > 0), `${path}: USER group`);
      const exposed = lastStage
        .filter((i) => i.getKeyword() === "EXPOSE")
        .flatMap((i) => i.getArguments().map((a) => Number(a.getValue())))
        .sort((a, b) => a - b);
      assert.deepEqual(exposed, expected, `${path} EXPOSE`);
    }
  });

  test("the manifests' pods run as the image's user", () => {
    const uid = Number(parseDockerfile("Dockerfile").getInstructions().filter((i) => i.getKeyword() === "USER").at(-1)?.getArgumentsContent()?.split(":")[0]);
    for (const workload of workloads(render("deploy/overlays/local"))) {
      assert.equal(workload.pod.securityContext?.runAsUser, uid, idOf(workload.object));
    }
  });
});

describe("Dockerfiles", () => {
  test("the linter finds problems where there are some", () => {
    assert.ok(lintDockerfile("FROM\nEXPOSE port\nCMD [\"a\"\n").length > 0);
  });

  for (const path of dockerfiles) {
    test(`${path} lints clean, is multi-stage on Node 20 and installs with npm ci`, () => {
      const text = read(path);
      assert.deepEqual(
        lintDockerfile(text).map((d) => `${path}:${d.range.start.line + 1}: ${d.message}`),
        [],
      );
      const dockerfile = parseDockerfile(path);
      const args = new Map(dockerfile.getInitialARGs().map((a) => [a.getProperty()?.getName(), a.getProperty()?.getValue()]));
      const nodeImage = args.get("NODE_IMAGE");
      assert.match(nodeImage ?? "", /^node:20[-.]/, `${path}: Node 20, the version the project runs on`);
      assert.ok(dockerfile.getFROMs().length >= 2, `${path} is multi-stage`);
      // The lock file is the install: `npm ci` and never `npm install`.
      const runs = dockerfile.getInstructions().filter((i) => i.getKeyword() === "RUN").map((i) => i.getArgumentsContent() ?? "");
      assert.ok(runs.some((r) => /\bnpm ci\b[^&]*--omit=dev/.test(r)), `${path} installs with npm ci --omit=dev`);
      assert.ok(!runs.some((r) => /\bnpm (install|i)\b/.test(r)), `${path} never runs npm install`);
    });
  }

  test("the CPU image carries no native TensorFlow and fetches no CUDA binaries; the GPU image does both", () => {
    const cpu = parseDockerfile("Dockerfile").getInstructions().filter((i) => i.getKeyword() === "RUN").map((i) => i.getArgumentsContent() ?? "").join("\n");
    assert.match(cpu, /--ignore-scripts/);
    assert.match(cpu, /rm -rf node_modules\/@tensorflow\/tfjs-node-gpu/);
    assert.match(read(".npmrc"), /^onnxruntime-node-install=skip$/m);
    const gpuFile = parseDockerfile("Dockerfile.gpu");
    const gpu = gpuFile.getInstructions().filter((i) => i.getKeyword() === "RUN").map((i) => i.getArgumentsContent() ?? "").join("\n");
    assert.doesNotMatch(gpu, /--ignore-scripts/);
    assert.match(gpu, /ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci/);
    assert.match(gpu, /tfjs_binding\.node/, "the GPU build fails when tfjs-node-gpu's binding did not install");
    const cudaBase = new Map(gpuFile.getInitialARGs().map((a) => [a.getProperty()?.getName(), a.getProperty()?.getValue()])).get("CUDA_BASE");
    // tfjs-node-gpu 4.x (libtensorflow 2.9): CUDA 11.2 and cuDNN 8.1.
    assert.match(cudaBase ?? "", /^nvidia\/cuda:11\.2\.\d+-cudnn8-runtime-/);
    const gpuVersion = (JSON.parse(read("package.json")) as { optionalDependencies: Record<string, string> }).optionalDependencies["@tensorflow/tfjs-node-gpu"];
    assert.match(gpuVersion, /^\^?4\./, "the CUDA base above is the one tfjs-node-gpu 4.x needs");
  });

  test(".dockerignore lets in every source folder the CLI imports, the files the config's defaults name, and no tests", () => {
    const filter = dockerignore({ ignorecase: false }).add(read(".dockerignore"));
    const kept = (path: string) => !filter.ignores(path);
    // Walk the relative imports from the sppo bin.
    const seen = new Set<string>();
    const queue = [join(repoRoot, packageJson.bin.sppo)];
    while (queue.length > 0) {
      const file = queue.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      const source = readFileSync(file, "utf8");
      for (const [, spec] of source.matchAll(/(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g)) {
        let target = resolve(dirname(file), spec);
        if (!existsSync(target) && target.endsWith(".js")) target = target.replace(/\.js$/, ".ts");
        if (existsSync(target)) queue.push(target);
      }
    }
    assert.ok(seen.size > 10, `the import walk found the CLI's sources (${seen.size} files)`);
    const missing = [...seen].map((f) => relative(repoRoot, f)).filter((f) => !kept(f));
    assert.deepEqual(missing, [], "sources the image would lack");
    // Defaults such as oracle.modelDir = "assets/oracle": what the repository ships must be in the image too.
    const defaults: string[] = [];
    const collect = (value: unknown) => {
      if (typeof value === "string") defaults.push(value);
      else if (value && typeof value === "object") Object.values(value).forEach(collect);
    };
    collect(configSchema.parse({}));
    for (const path of defaults.filter((p) => /^[\w.-]+\/[\w./-]+$/.test(p) && existsSync(join(repoRoot, p)))) {
      const files = statSync(join(repoRoot, path)).isDirectory()
        ? readdirSync(join(repoRoot, path), { recursive: true, withFileTypes: true })
            .filter((e) => e.isFile())
            .map((e) => relative(repoRoot, join(e.parentPath, e.name)))
        : [path];
      const tracked = files.filter((f) => !gitIgnored(f));
      assert.deepEqual(tracked.filter((f) => !kept(f)), [], `config default ${path} is in the image`);
    }
    for (const path of ["test/deploy/manifests.test.ts", "deploy/base/kustomization.yaml", "node_modules/yaml/package.json", "bench"]) {
      assert.ok(!kept(path), `${path} stays out of the image`);
    }
    assert.ok(kept("package-lock.json") && kept(".npmrc"), "npm ci gets the lock file and .npmrc");
  });
});

function gitIgnored(path: string): boolean {
  try {
    execFileSync("git", ["check-ignore", "-q", path], { cwd: repoRoot, stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
