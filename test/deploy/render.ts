/**
 * Test helpers for deploy/: render a kustomization into Kubernetes objects, validate them against the Kubernetes API
 * schemas (kubernetes-models), and pick workloads, containers and labels out of them.
 *
 * Rendering runs `kubectl kustomize` (kustomize is built into kubectl; kubectl comes with this project's machine
 * image, at /usr/bin/kubectl). Set KUBECTL to use another binary, or KUSTOMIZE to use a standalone `kustomize`
 * (`kustomize build DIR`). Nothing is downloaded and no cluster is contacted.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { delimiter, join, resolve } from "node:path";
import type { IContainer } from "kubernetes-models/v1/Container";
import ts from "typescript";
import type { IPodSpec } from "kubernetes-models/v1/PodSpec";
import { parseAllDocuments } from "yaml";

/** The repository root (this file is test/deploy/render.ts). */
export const repoRoot = resolve(import.meta.dirname, "../..");

/** The overlays users apply; every one must build and validate. */
export const overlays = ["local", "gpu", "swap-oracle"] as const;
export type OverlayName = (typeof overlays)[number];

/** A rendered Kubernetes object: apiVersion, kind and metadata are checked by `render`, the rest by the schemas. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

function onPath(binary: string): boolean {
  if (binary.includes("/")) return existsSync(binary);
  return (process.env.PATH ?? "").split(delimiter).some((dir) => dir !== "" && existsSync(join(dir, binary)));
}

/** The command that renders a kustomization directory, or an error that says what to install. */
function kustomizeCommand(dir: string): [string, string[]] {
  if (process.env.KUSTOMIZE) return [process.env.KUSTOMIZE, ["build", dir]];
  const kubectl = process.env.KUBECTL ?? "kubectl";
  if (onPath(kubectl)) return [kubectl, ["kustomize", dir]];
  throw new Error(
    `cannot render ${dir}: no kubectl on PATH. kubectl (with kustomize built in) is part of the project's machine image; ` +
      "install it (Debian: apt-get install kubectl) or point KUBECTL or KUSTOMIZE at a binary.",
  );
}

/** Renders a kustomization (a path relative to the repository root) into its objects, in output order. */
export function render(dir: string): KubeObject[] {
  const absolute = resolve(repoRoot, dir);
  const [command, args] = kustomizeCommand(absolute);
  let text: string;
  try {
    text = execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 * 1024 * 1024 });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? "";
    throw new Error(`${command} ${args.join(" ")} failed: ${stderr.trim() || (err as Error).message}`);
  }
  const objects: KubeObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`${dir}: rendered YAML does not parse: ${doc.errors[0].message}`);
    const value = doc.toJS() as KubeObject | null;
    if (value === null) continue;
    if (typeof value.apiVersion !== "string" || typeof value.kind !== "string" || typeof value.metadata?.name !== "string") {
      throw new Error(`${dir}: an object without apiVersion, kind or metadata.name: ${JSON.stringify(value).slice(0, 200)}`);
    }
    objects.push(value);
  }
  return objects;
}

/** "Kind/name", as kubectl names objects. */
export const idOf = (object: KubeObject): string => `${object.kind}/${object.metadata.name}`;

/** The module of kubernetes-models (or of a CRD's @kubernetes-models package) that holds a kind's model and types. */
function modelModule(object: KubeObject): string {
  const [group, version] = object.apiVersion.includes("/") ? object.apiVersion.split("/") : ["", object.apiVersion];
  return group === "monitoring.coreos.com"
    ? `@kubernetes-models/prometheus-operator/${group}/${version}/${object.kind}`
    : `kubernetes-models/${group === "" ? "" : `${group}/`}${version}/${object.kind}`;
}

/**
 * Checks that every field of every object is one its kind defines, at any depth: the JSON schemas above accept
 * unknown fields (Kubernetes' OpenAPI does not forbid them), while the API server rejects them (kubectl's default
 * --validate=strict) — so a misspelt `readinesProbe` would pass the schema and fail at `kubectl apply`. Each object
 * is type-checked by the TypeScript compiler as an object literal of kubernetes-models' interface for its kind,
 * whose excess-property check names any field the kind does not have. Returns one message per problem, naming the
 * object (`label`) and the field.
 */
export function unknownFields(objects: { label: string; object: KubeObject }[]): string[] {
  const file = join(repoRoot, "test/deploy/__rendered_objects__.ts"); // in memory only: never written
  const source = objects
    .map(({ object }, i) => `import type { I${object.kind} as T${i} } from "${modelModule(object)}";\nexport const o${i}: T${i} = ${JSON.stringify(object)};`)
    .join("\n");
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, language, ...rest) =>
    name === file ? ts.createSourceFile(name, source, language) : getSourceFile.call(host, name, language, ...rest);
  host.fileExists = (name) => name === file || fileExists.call(host, name);
  host.readFile = (name) => (name === file ? source : readFile.call(host, name));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((diagnostic) => {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, " ");
    if (diagnostic.file?.fileName !== file || diagnostic.start === undefined) return `type check: ${message}`;
    const line = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start).line;
    const { label, object } = objects[Math.floor(line / 2)];
    return `${label} ${idOf(object)}: ${message}`;
  });
}

/**
 * Validates one object against the Kubernetes OpenAPI schema of its kind with kubernetes-models (CRDs with the
 * @kubernetes-models package of their project). Throws naming the object and the schema errors; throws too when no
 * schema is known for the kind, so that no object goes unchecked.
 */
export async function validateObject(object: KubeObject): Promise<void> {
  const module = modelModule(object);
  let exports: Record<string, unknown>;
  try {
    exports = await import(module);
  } catch (err) {
    throw new Error(`${idOf(object)}: no schema for ${object.apiVersion} ${object.kind} (${(err as Error).message.split("\n")[0]})`);
  }
  const Model = exports[object.kind] as
    | (new (data: unknown) => { validate(): void }) & { apiVersion: string; kind: string }
    | undefined;
  if (!Model || Model.apiVersion !== object.apiVersion || Model.kind !== object.kind) {
    throw new Error(`${idOf(object)}: ${module} does not export the model of ${object.apiVersion} ${object.kind}`);
  }
  try {
    new Model(object).validate();
  } catch (err) {
    throw new Error(`${idOf(object)} does not match the ${object.apiVersion} ${object.kind} schema: ${(err as Error).message}`);
  }
}

/** A Deployment, StatefulSet or Job with its pod template. */
export interface Workload {
  object: KubeObject;
  podLabels: Record<string, string>;
  podAnnotations: Record<string, string>;
  pod: IPodSpec;
}

const workloadKinds = new Set(["Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet", "CronJob", "Pod"]);

/** Every object that runs pods, with its pod template. */
export function workloads(objects: KubeObject[]): Workload[] {
  const out: Workload[] = [];
  for (const object of objects) {
    if (!workloadKinds.has(object.kind)) continue;
    type Template = { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: IPodSpec };
    const spec = object.spec as { template?: Template; jobTemplate?: { spec: { template: Template } } };
    const template: Template | undefined =
      object.kind === "Pod"
        ? { metadata: object.metadata, spec: object.spec as IPodSpec }
        : object.kind === "CronJob"
          ? spec.jobTemplate?.spec.template
          : spec.template;
    if (!template) throw new Error(`${idOf(object)} has no pod template`);
    out.push({
      object,
      podLabels: template.metadata?.labels ?? {},
      podAnnotations: template.metadata?.annotations ?? {},
      pod: template.spec,
    });
  }
  return out;
}

/** The sppo component of a workload or Service ("generator", "oracle", "optimizer", "loop"). */
export const componentOf = (labels: Record<string, string> | undefined): string | undefined => labels?.["app.kubernetes.io/component"];

/** The container of a workload that runs sppo (named after its component). */
export function mainContainer(workload: Workload): IContainer {
  const name = componentOf(workload.podLabels);
  const container = workload.pod.containers.find((c) => c.name === name);
  if (!container) throw new Error(`${idOf(workload.object)}: no container named ${name}`);
  return container;
}

/**
 * A container's command line as the process sees it: `args` with Kubernetes' $(VAR) references expanded from the
 * container's literal env values (the rule the kubelet applies; $$ escapes a dollar).
 */
export function expandedArgs(container: IContainer): string[] {
  const env = new Map<string, string>();
  for (const variable of container.env ?? []) if (variable.value !== undefined) env.set(variable.name, variable.value);
  return (container.args ?? []).map((arg) =>
    arg.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (match, name?: string) => {
      if (match === "$$") return "$";
      const value = env.get(name!);
      if (value === undefined) throw new Error(`container ${container.name}: $(${name}) in args has no env value`);
      return value;
    }),
  );
}
