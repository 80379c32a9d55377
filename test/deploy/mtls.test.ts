/**
 * deploy/components/mtls on every overlay users apply (test/deploy/manifests.test.ts covers it on the local overlay
 * only, through test/deploy/kustomize/all-components): each overlay, wrapped in a kustomization that adds the
 * component, renders the certificate paths into every service's config (server.tls and client.tls, as the pod's
 * loadConfig sees them), mounts the Secret, turns the services' gRPC probes into TCP checks, and keeps the env the
 * overlay already had — also env that an overlay of the user's adds to the generator and the oracle, whether the
 * component wraps that overlay or sits beside the patch in one kustomization.
 * Run: node --import tsx --test test/deploy/mtls.test.ts   (needs kubectl, see test/deploy/render.ts)
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, describe, test } from "node:test";
import type { IContainer } from "kubernetes-models/v1/Container";
import { loadConfig } from "../../lib/config/load.js";
import { expandedArgs, idOf, type KubeObject, mainContainer, overlays, render, repoRoot, type Workload, workloads } from "./render.js";

const scratch = mkdtempSync(join(tmpdir(), "sppo-mtls-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** Renders `overlay` with the mtls component added by a kustomization outside the repository (paths relative). */
function renderWithMtls(overlay: string): KubeObject[] {
  const dir = join(scratch, overlay);
  const rel = (path: string) => relative(dir, join(repoRoot, path));
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, "kustomization.yaml"),
    [
      "apiVersion: kustomize.config.k8s.io/v1beta1",
      "kind: Kustomization",
      "resources:",
      `  - ${rel(`deploy/overlays/${overlay}`)}`,
      "components:",
      `  - ${rel("deploy/components/mtls")}`,
      "",
    ].join("\n"),
  );
  return render(dir);
}

/** The config the pod's sppo process builds: the ConfigMap file its --config names, with its SPPO_* env on top. */
function configOf(objects: KubeObject[], workload: Workload, container: IContainer) {
  const where = idOf(workload.object);
  const args = expandedArgs(container);
  const path = args[args.indexOf("--config") + 1];
  assert.ok(args.includes("--config") && path, `${where} passes --config`);
  const mount = container.volumeMounts?.find((m) => path.startsWith(`${m.mountPath}/`));
  const volume = workload.pod.volumes?.find((v) => v.name === mount?.name);
  const configMap = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === volume?.configMap?.name);
  const key = path.slice((mount?.mountPath.length ?? 0) + 1);
  const text = (configMap?.data as Record<string, string> | undefined)?.[key];
  assert.ok(text, `${where}: --config ${path} is a key of a mounted ConfigMap`);
  const env: NodeJS.ProcessEnv = {};
  for (const variable of container.env ?? []) if (variable.name.startsWith("SPPO_SERVER__") || variable.name.startsWith("SPPO_CLIENT__")) env[variable.name] = variable.value;
  const file = join(mkdtempSync(join(scratch, "config-")), key);
  writeFileSync(file, text);
  return loadConfig({ file, env });
}

describe("the mtls component on every overlay", () => {
  for (const overlay of overlays) {
    test(`${overlay} + mtls: every workload mounts sppo-tls and its config has server.tls and client.tls`, () => {
      const plain = render(`deploy/overlays/${overlay}`);
      const objects = renderWithMtls(overlay);
      const withMtls = workloads(objects);
      assert.deepEqual(withMtls.map((w) => idOf(w.object)).sort(), workloads(plain).map((w) => idOf(w.object)).sort(), "the same workloads");
      assert.ok(withMtls.length >= 3, `${overlay}: ${withMtls.length} workloads`);
      for (const workload of withMtls) {
        const where = `${overlay}: ${idOf(workload.object)}`;
        const container = mainContainer(workload);
        const mount = container.volumeMounts?.find((m) => m.mountPath === "/etc/sppo/tls");
        assert.ok(mount?.readOnly, `${where} mounts the certificates read-only`);
        assert.equal(workload.pod.volumes?.find((v) => v.name === mount.name)?.secret?.secretName, "sppo-tls", where);
        const config = configOf(objects, workload, container);
        assert.deepEqual(config.server.tls, { certFile: "/etc/sppo/tls/tls.crt", keyFile: "/etc/sppo/tls/tls.key", clientCaFile: "/etc/sppo/tls/ca.crt" }, where);
        assert.deepEqual(config.client.tls, { caFile: "/etc/sppo/tls/ca.crt", certFile: "/etc/sppo/tls/tls.crt", keyFile: "/etc/sppo/tls/tls.key" }, where);
        // The env the overlay set is still there (a JSON-patch add of a whole env list would replace it).
        const before = mainContainer(workloads(plain).find((w) => idOf(w.object) === idOf(workload.object))!).env ?? [];
        for (const variable of before) assert.ok(container.env?.some((v) => v.name === variable.name && v.value === variable.value), `${where} keeps ${variable.name}`);
        // Kubernetes' gRPC probes cannot speak TLS: the services' probes are TCP checks of the gRPC port.
        if (workload.object.kind !== "Job") {
          for (const probe of [container.startupProbe, container.readinessProbe, container.livenessProbe]) {
            assert.equal(probe?.grpc, undefined, `${where}: a gRPC probe left`);
            assert.equal(probe?.tcpSocket?.port, "grpc", `${where}: a TCP probe of the gRPC port`);
          }
        }
      }
    });
  }
});

/** A kustomization in `scratch/name` from these lines; `rel` makes repository paths relative to it. */
function writeKustomization(name: string, lines: (rel: (path: string) => string) => string[]): string {
  const dir = join(scratch, name);
  mkdirSync(dir, { recursive: true });
  const rel = (path: string) => relative(dir, path.startsWith("/") ? path : join(repoRoot, path));
  writeFileSync(join(dir, "kustomization.yaml"), [...lines(rel), ""].join("\n"));
  return dir;
}

/** A strategic-merge patch that gives the generator and the oracle CUDA_VISIBLE_DEVICES, as a GPU overlay might. */
const cudaPatches = [
  "patches:",
  ...(["generator", "oracle"] as const).flatMap((component) => [
    "  - patch: |-",
    "      apiVersion: apps/v1",
    "      kind: Deployment",
    "      metadata:",
    `        name: sppo-${component}`,
    "      spec:",
    "        template:",
    "          spec:",
    "            containers:",
    `              - name: ${component}`,
    "                env:",
    "                  - name: CUDA_VISIBLE_DEVICES",
    '                    value: "0"',
  ]),
];

describe("the mtls component with env an overlay adds", () => {
  const header = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization"];
  const withCuda = writeKustomization("gpu-cuda", (rel) => [...header, "resources:", `  - ${rel("deploy/overlays/gpu")}`, ...cudaPatches]);
  const arrangements = {
    // The component wraps an overlay that set env: a JSON-patch add of a whole env list would replace it.
    "the component around an overlay that adds env": writeKustomization("around", (rel) => [
      ...header,
      "resources:",
      `  - ${rel(withCuda)}`,
      "components:",
      `  - ${rel("deploy/components/mtls")}`,
    ]),
    "the component and the env patch in one kustomization": writeKustomization("beside", (rel) => [
      ...header,
      "resources:",
      `  - ${rel("deploy/overlays/gpu")}`,
      "components:",
      `  - ${rel("deploy/components/mtls")}`,
      ...cudaPatches,
    ]),
  };
  for (const [title, dir] of Object.entries(arrangements)) {
    test(`${title}: the generator and the oracle keep CUDA_VISIBLE_DEVICES and get the TLS config`, () => {
      const objects = render(dir);
      for (const component of ["generator", "oracle"]) {
        const workload = workloads(objects).find((w) => w.podLabels["app.kubernetes.io/component"] === component);
        assert.ok(workload, `a ${component} workload`);
        const container = mainContainer(workload);
        const where = `${title}: ${idOf(workload.object)}`;
        assert.deepEqual(container.env?.filter((v) => v.name === "CUDA_VISIBLE_DEVICES"), [{ name: "CUDA_VISIBLE_DEVICES", value: "0" }], `${where} keeps CUDA_VISIBLE_DEVICES`);
        const config = configOf(objects, workload, container);
        assert.deepEqual(config.server.tls, { certFile: "/etc/sppo/tls/tls.crt", keyFile: "/etc/sppo/tls/tls.key", clientCaFile: "/etc/sppo/tls/ca.crt" }, where);
        assert.deepEqual(config.client.tls, { caFile: "/etc/sppo/tls/ca.crt", certFile: "/etc/sppo/tls/tls.crt", keyFile: "/etc/sppo/tls/tls.key" }, where);
        assert.equal(new Set(container.env?.map((v) => v.name)).size, container.env?.length, `${where}: no variable twice`);
      }
    });
  }
});
