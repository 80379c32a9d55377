/**
 * deploy/: every overlay builds with kustomize, every object validates against the Kubernetes API schemas, and the
 * properties the deployment promises hold: native gRPC probes on the ports the services listen on, requests and
 * limits, the restricted security context, headless Services that select their pods, the optimizer's checkpoint
 * volume (resumed from), the loop Job continuing its unfinished run when retried, budgets, Prometheus annotations,
 * and a config that the services' own schema accepts.
 *
 *   node --import tsx --test test/deploy/manifests.test.ts
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IProbe } from "kubernetes-models/v1/Probe";
import { Generator } from "../../gen/sppo/v1/generator_pb.js";
import { Optimizer } from "../../gen/sppo/v1/optimizer_pb.js";
import { PreferenceOracle } from "../../gen/sppo/v1/oracle_pb.js";
import { parseAllDocuments } from "yaml";
import { loadConfig } from "../../lib/config/load.js";
import { defaultPorts } from "../../services/index.js";
import {
  componentOf,
  expandedArgs,
  idOf,
  type KubeObject,
  mainContainer,
  type OverlayName,
  overlays,
  render,
  repoRoot,
  validateObject,
  type Workload,
  unknownFields,
  workloads,
} from "./render.js";

const packageVersion = (JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { version: string }).version;

/** The services `sppo serve` runs: their default gRPC port and the fully-qualified name their readiness probe asks for. */
const services = {
  generator: { port: defaultPorts.generator, healthService: Generator.typeName },
  oracle: { port: defaultPorts.oracle, healthService: PreferenceOracle.typeName },
  optimizer: { port: defaultPorts.optimizer, healthService: Optimizer.typeName },
} as const;
type ServiceName = keyof typeof services;
const isService = (component: string | undefined): component is ServiceName => component !== undefined && component in services;

const builds: Record<string, string> = {
  ...Object.fromEntries(overlays.map((name) => [name, `deploy/overlays/${name}`])),
  base: "deploy/base",
  "all-components": "test/deploy/kustomize/all-components",
};
const rendered = new Map<string, KubeObject[]>();
const renderedOf = (name: string): KubeObject[] => {
  let objects = rendered.get(name);
  if (!objects) {
    objects = render(builds[name]);
    rendered.set(name, objects);
  }
  return objects;
};

function find(objects: KubeObject[], kind: string, name: string): KubeObject {
  const object = objects.find((o) => o.kind === kind && o.metadata.name === name);
  assert.ok(object, `${kind}/${name} is missing`);
  return object;
}

function workloadOf(objects: KubeObject[], component: string): Workload {
  const matches = workloads(objects).filter((w) => componentOf(w.podLabels) === component);
  assert.equal(matches.length, 1, `expected one workload for component ${component}, found ${matches.map((w) => idOf(w.object))}`);
  return matches[0];
}

/** A Kubernetes resource quantity ("500m", "2", "1Gi", "512Mi", "1e3") as a number of base units. */
export function parseQuantity(quantity: string | number): number {
  if (typeof quantity === "number") return quantity;
  const match = /^([0-9.]+(?:[eE][-+]?[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/.exec(quantity);
  assert.ok(match, `not a quantity: ${quantity}`);
  const factor: Record<string, number> = {
    m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
    Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
  };
  return Number(match[1]) * (match[2] ? factor[match[2]] : 1);
}

/** The value following `flag` in an argument list. */
function flagValue(args: string[], flag: string): string | undefined {
  const index = args.indexOf(flag);
  return index >= 0 ? args[index + 1] : undefined;
}

function portNumber(container: IContainer, port: number | string | undefined): number | undefined {
  if (typeof port === "number") return port;
  return container.ports?.find((p) => p.name === port)?.containerPort;
}

describe("parseQuantity", () => {
  test("reads the suffixes Kubernetes uses", () => {
    assert.equal(parseQuantity("500m"), 0.5);
    assert.equal(parseQuantity("2"), 2);
    assert.equal(parseQuantity("1Gi"), 1024 ** 3);
    assert.equal(parseQuantity("512Mi"), 512 * 1024 ** 2);
    assert.equal(parseQuantity("1k"), 1000);
    assert.throws(() => parseQuantity("1 GB"));
  });
});

describe("expandedArgs", () => {
  test("expands $(VAR) from env values and keeps $$ as a dollar", () => {
    const container: IContainer = {
      name: "c",
      args: ["run", "--oracle", "$(ORACLE)", "cost$$"],
      env: [{ name: "ORACLE", value: "dns:///o:1" }],
    };
    assert.deepEqual(expandedArgs(container), ["run", "--oracle", "dns:///o:1", "cost$"]);
    assert.throws(() => expandedArgs({ name: "c", args: ["$(MISSING)"] }), /MISSING/);
  });
});

for (const name of Object.keys(builds)) {
  describe(`kustomize ${builds[name]}`, () => {
    test("builds, and every object validates against its Kubernetes API schema", async () => {
      const objects = renderedOf(name);
      assert.ok(objects.length > 0);
      const errors: string[] = [];
      for (const object of objects) {
        try {
          await validateObject(object);
        } catch (err) {
          errors.push((err as Error).message);
        }
      }
      assert.deepEqual(errors, []);
      const ids = objects.map(idOf);
      assert.equal(new Set(ids).size, ids.length, `duplicate objects: ${ids}`);
    });

    test("everything namespaced lives in the sppo namespace, which enforces the restricted Pod Security Standard", () => {
      const objects = renderedOf(name);
      const namespace = find(objects, "Namespace", "sppo");
      assert.equal(namespace.metadata.labels?.["pod-security.kubernetes.io/enforce"], "restricted");
      for (const object of objects) {
        if (object.kind === "Namespace") continue;
        assert.equal(object.metadata.namespace, "sppo", `${idOf(object)} namespace`);
      }
    });

    test("pods run non-root with a read-only root file system, no capabilities, no privilege escalation, RuntimeDefault seccomp", () => {
      for (const workload of workloads(renderedOf(name))) assertRestricted(workload);
    });

    test("every container requests and limits CPU and memory, with requests within limits", () => {
      for (const workload of workloads(renderedOf(name))) assertResources(workload);
    });

    test("services have native gRPC probes on the port they serve, readiness on their own health service", () => {
      for (const workload of workloads(renderedOf(name))) {
        const component = componentOf(workload.podLabels);
        if (!isService(component)) continue;
        const container = mainContainer(workload);
        const where = idOf(workload.object);
        const args = expandedArgs(container);
        assert.deepEqual(args.slice(0, 2), ["serve", component], `${where} runs sppo serve ${component}`);
        const port = Number(flagValue(args, "--port"));
        assert.equal(port, services[component].port, `${where} --port`);
        assert.equal(portNumber(container, "grpc"), port, `${where} container port grpc`);
        const probes: Record<string, IProbe | undefined> = {
          startupProbe: container.startupProbe,
          readinessProbe: container.readinessProbe,
          livenessProbe: container.livenessProbe,
        };
        const mtls = name === "all-components";
        for (const [kind, probe] of Object.entries(probes)) {
          assert.ok(probe, `${where} has a ${kind}`);
          if (mtls) {
            // gRPC probes cannot speak TLS: the mtls component turns them into TCP checks of the same port.
            assert.equal(probe.grpc, undefined, `${where} ${kind}: no gRPC probe under mTLS`);
            assert.equal(portNumber(container, probe.tcpSocket?.port), port, `${where} ${kind} TCP port`);
          } else {
            assert.equal(probe.grpc?.port, port, `${where} ${kind} is a gRPC probe of port ${port}`);
          }
        }
        if (!mtls) {
          assert.equal(probes.readinessProbe?.grpc?.service, services[component].healthService, `${where} readiness service`);
          assert.equal(probes.livenessProbe?.grpc?.service ?? "", "", `${where} liveness asks for the whole server`);
          assert.equal(probes.startupProbe?.grpc?.service ?? "", "", `${where} start-up asks for the whole server`);
        }
        // Kubernetes kills a pod that outlives its grace period: it must cover the server's drain.
        const config = configOf(renderedOf(name), workload, container, serverSections);
        assert.ok(
          (workload.pod.terminationGracePeriodSeconds ?? 30) * 1000 > config.server.shutdownGraceMs,
          `${where}: terminationGracePeriodSeconds must exceed server.shutdownGraceMs`,
        );
      }
    });

    test("Services are headless, select exactly their component's pods and name ports the containers have", () => {
      const objects = renderedOf(name);
      const pods = workloads(objects);
      for (const service of objects.filter((o) => o.kind === "Service")) {
        const spec = service.spec as { clusterIP?: string; selector?: Record<string, string>; ports: { name?: string; port: number; targetPort?: string | number }[] };
        assert.equal(spec.clusterIP, "None", `${idOf(service)} is headless (clients balance over pods with round_robin)`);
        const selector = Object.entries(spec.selector ?? {});
        assert.ok(selector.length > 0, `${idOf(service)} has a selector`);
        const selected = pods.filter((w) => selector.every(([k, v]) => w.podLabels[k] === v));
        assert.equal(selected.length, 1, `${idOf(service)} selects the pods of one workload: ${selected.map((w) => idOf(w.object))}`);
        const component = componentOf(service.metadata.labels);
        assert.equal(componentOf(selected[0].podLabels), component, `${idOf(service)} selects its own component`);
        const container = mainContainer(selected[0]);
        for (const port of spec.ports) {
          const target = portNumber(container, port.targetPort ?? port.port);
          assert.equal(target, port.port, `${idOf(service)} port ${port.name} reaches container port ${port.targetPort}`);
        }
        if (isService(component)) {
          assert.ok(spec.ports.some((p) => p.port === services[component].port), `${idOf(service)} exposes the gRPC port`);
        }
      }
    });

    test("the pods are scraped by Prometheus on the port their metrics are served on", () => {
      const objects = renderedOf(name);
      for (const workload of workloads(objects)) {
        const where = idOf(workload.object);
        const container = mainContainer(workload);
        assert.equal(workload.podAnnotations["prometheus.io/scrape"], "true", `${where} prometheus.io/scrape`);
        assert.equal(workload.podAnnotations["prometheus.io/path"], "/metrics", `${where} prometheus.io/path`);
        const port = Number(workload.podAnnotations["prometheus.io/port"]);
        assert.equal(portNumber(container, "metrics"), port, `${where} annotation port is the container's metrics port`);
        assert.equal(configOf(objects, workload, container, serverSections).server.metricsPort, port, `${where} server.metricsPort`);
      }
    });

    test("every pod reads the generated config file, and the services' own schema accepts it with each pod's env", () => {
      const objects = renderedOf(name);
      for (const workload of workloads(objects)) configOf(objects, workload, mainContainer(workload));
    });

    test("the generator and the oracle have disruption budgets that select their pods and allow a drain", () => {
      const objects = renderedOf(name);
      const budgets = objects.filter((o) => o.kind === "PodDisruptionBudget");
      for (const component of ["generator", "oracle"]) {
        if (name === "swap-oracle" && component === "oracle") continue;
        const workload = workloadOf(objects, component);
        const matching = budgets.filter((b) => {
          const labels = (b.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels;
          return Object.entries(labels).every(([k, v]) => workload.podLabels[k] === v);
        });
        assert.equal(matching.length, 1, `one PodDisruptionBudget for the ${component}`);
        const spec = matching[0].spec as { maxUnavailable?: number | string; minAvailable?: number | string };
        // A budget that allows no disruption would block every node drain.
        assert.ok(spec.maxUnavailable !== undefined && spec.maxUnavailable !== 0, `${component} budget lets a drain proceed`);
      }
    });

    test("the optimizer is one pod that writes checkpoints and policy versions to a PersistentVolumeClaim", () => {
      const objects = renderedOf(name);
      const workload = workloadOf(objects, "optimizer");
      assert.equal(workload.object.kind, "StatefulSet");
      const spec = workload.object.spec as {
        replicas: number;
        serviceName: string;
        volumeClaimTemplates: { metadata: { name: string }; spec: { accessModes: string[]; resources: { requests: { storage: string } } } }[];
        persistentVolumeClaimRetentionPolicy?: { whenDeleted?: string };
      };
      assert.equal(spec.replicas, 1);
      find(objects, "Service", spec.serviceName);
      assert.equal(spec.persistentVolumeClaimRetentionPolicy?.whenDeleted, "Retain", "checkpoints survive deleting the StatefulSet");
      const container = mainContainer(workload);
      const { optimizer } = configOf(objects, workload, container);
      // A restarted optimizer continues from its checkpoints, and the loop replays the open iteration into it.
      assert.equal(optimizer.resume, true, "optimizer.resume: a restarted pod continues from its newest checkpoint");
      for (const [key, dir] of Object.entries({ checkpointDir: optimizer.checkpointDir, policyDir: optimizer.policyDir })) {
        const mount = container.volumeMounts?.find((m) => dir.startsWith(`${m.mountPath}/`));
        assert.ok(mount && mount.readOnly !== true, `optimizer.${key} ${dir} is inside a writable volume`);
        const claim = spec.volumeClaimTemplates.find((c) => c.metadata.name === mount.name);
        assert.ok(claim, `optimizer.${key} ${dir} is on a PersistentVolumeClaim`);
        assert.ok(parseQuantity(claim.spec.resources.requests.storage) >= 2 ** 30, "at least 1Gi for checkpoints");
      }
    });

    test("the loop Job runs `sppo run` against the services and keeps its outputs on a volume", () => {
      const objects = renderedOf(name);
      const workload = workloadOf(objects, "loop");
      assert.equal(workload.object.kind, "Job");
      assert.equal(workload.pod.restartPolicy, "Never");
      const container = mainContainer(workload);
      const args = expandedArgs(container);
      assert.equal(args[0], "run");
      // A retried attempt (backoffLimit) continues the unfinished run in --out instead of refusing it.
      assert.ok(args.includes("--continue"), "the Job runs `sppo run --continue`");
      assert.ok(!args.includes("--resume"), "--resume would ignore --config: the Job uses --continue");
      assert.ok(((workload.object.spec as { backoffLimit?: number }).backoffLimit ?? 6) >= 1, "the Job retries a failed attempt");
      for (const component of ["generator", "oracle", "optimizer"] as const) {
        const address = flagValue(args, `--${component}`);
        assert.ok(address, `--${component} is given`);
        const match = /^dns:\/\/\/([a-z0-9.-]+):([0-9]+)$/.exec(address);
        assert.ok(match, `--${component} ${address} is a dns:/// target (round_robin over every pod)`);
        const [, host, port] = match;
        if (name === "swap-oracle" && component === "oracle") {
          assert.ok(!objects.some((o) => o.metadata.name === "sppo-oracle"), "the built-in oracle is gone");
          assert.match(host, /\.svc\.cluster\.local$|\./, "the replacement oracle is addressed by its own name");
          continue;
        }
        const service = find(objects, "Service", host);
        assert.equal(componentOf(service.metadata.labels), component);
        const ports = (service.spec as { ports: { port: number }[] }).ports.map((p) => p.port);
        assert.ok(ports.includes(Number(port)), `${address}: Service ${host} has port ${port}`);
        assert.equal(Number(port), services[component].port);
      }
      const out = flagValue(args, "--out");
      assert.ok(out, "--out is given");
      const mount = container.volumeMounts?.find((m) => m.mountPath === out);
      assert.ok(mount, `--out ${out} is a mounted volume`);
      const volume = workload.pod.volumes?.find((v) => v.name === mount.name);
      assert.ok(volume?.persistentVolumeClaim, "--out is on a PersistentVolumeClaim");
      find(objects, "PersistentVolumeClaim", volume.persistentVolumeClaim.claimName);
      const config = configOf(objects, workload, container);
      // round_robin puts each of the loop's streams on one replica: fewer streams than replicas leave some idle.
      for (const component of ["generator", "oracle"]) {
        if (name === "swap-oracle" && component === "oracle") continue;
        const replicas = (workloadOf(objects, component).object.spec as { replicas?: number }).replicas ?? 1;
        assert.ok(config.pipeline.streamsPerService >= replicas, `pipeline.streamsPerService ${config.pipeline.streamsPerService} < ${replicas} ${component} replicas`);
      }
      const telemetry = portNumber(container, "telemetry");
      assert.equal(telemetry, config.pipeline.telemetryPort, "the container port named telemetry is pipeline.telemetryPort");
      const loopService = find(objects, "Service", "sppo-loop").spec as { ports: { port: number }[] };
      assert.ok(loopService.ports.some((p) => p.port === telemetry), "Service sppo-loop exposes the telemetry port");
      // The generators' fallback source of weights is the same optimizer the loop trains with.
      const generator = workloadOf(objects, "generator");
      const { generator: generatorConfig } = configOf(objects, generator, mainContainer(generator));
      assert.equal(generatorConfig.optimizerTarget, flagValue(args, "--optimizer"), "generator.optimizerTarget is the loop's optimizer");
    });

    test("images are the project's, tagged with package.json's version", () => {
      const gpu = name === "gpu";
      for (const workload of workloads(renderedOf(name))) {
        for (const container of workload.pod.containers) {
          assert.equal(container.image, `sppo:${packageVersion}${gpu ? "-gpu" : ""}`, `${idOf(workload.object)} image`);
        }
      }
    });
  });
}

/** The restricted Pod Security Standard, and a writable emptyDir at /tmp since the root file system is read-only. */
function assertRestricted(workload: Workload): void {
  const id = idOf(workload.object);
  const pod = workload.pod;
  assert.equal(pod.securityContext?.runAsNonRoot, true, `${id} runAsNonRoot`);
  assert.ok((pod.securityContext?.runAsUser ?? 0) > 0, `${id} runAsUser must not be root`);
  assert.equal(pod.securityContext?.seccompProfile?.type, "RuntimeDefault", `${id} seccomp`);
  assert.equal(pod.automountServiceAccountToken, false, `${id} mounts no API token`);
  assert.notEqual(pod.hostNetwork, true, `${id} hostNetwork`);
  for (const container of [...(pod.initContainers ?? []), ...pod.containers]) {
    const where = `${id} container ${container.name}`;
    const sc = container.securityContext;
    assert.equal(sc?.allowPrivilegeEscalation, false, `${where} allowPrivilegeEscalation`);
    assert.equal(sc?.readOnlyRootFilesystem, true, `${where} readOnlyRootFilesystem`);
    assert.notEqual(sc?.privileged, true, `${where} privileged`);
    assert.deepEqual(sc?.capabilities?.drop, ["ALL"], `${where} drops ALL capabilities`);
    assert.deepEqual(sc?.capabilities?.add ?? [], [], `${where} adds no capability`);
    assert.notEqual(sc?.runAsUser, 0, `${where} runAsUser`);
    const tmp = container.volumeMounts?.find((m) => m.mountPath === "/tmp");
    assert.ok(tmp, `${where} mounts /tmp`);
    assert.ok(pod.volumes?.find((v) => v.name === tmp.name)?.emptyDir, `${where} /tmp is an emptyDir`);
    assert.notEqual(tmp.readOnly, true, `${where} /tmp writable`);
  }
}

/** CPU and memory requests and limits on every container, requests within limits; emptyDirs bounded. */
function assertResources(workload: Workload): void {
  for (const container of workload.pod.containers) {
    const where = `${idOf(workload.object)} container ${container.name}`;
    const { requests = {}, limits = {} } = container.resources ?? {};
    for (const resource of ["cpu", "memory"]) {
      assert.ok(requests[resource] !== undefined, `${where} requests ${resource}`);
      assert.ok(limits[resource] !== undefined, `${where} limits ${resource}`);
      assert.ok(
        parseQuantity(requests[resource]) <= parseQuantity(limits[resource]),
        `${where} ${resource}: request ${requests[resource]} over limit ${limits[resource]}`,
      );
    }
  }
  // Disk-backed emptyDirs count against the pod's ephemeral-storage limit: past it the pod is evicted.
  let scratch = 0;
  for (const volume of workload.pod.volumes ?? []) {
    if (!volume.emptyDir) continue;
    assert.ok(volume.emptyDir.sizeLimit, `${idOf(workload.object)}: emptyDir ${volume.name} has a sizeLimit`);
    if (volume.emptyDir.medium !== "Memory") scratch += parseQuantity(volume.emptyDir.sizeLimit);
  }
  const ephemeral = workload.pod.containers.map((c) => c.resources?.limits?.["ephemeral-storage"]);
  if (ephemeral.every((limit) => limit !== undefined)) {
    const total = ephemeral.reduce((sum: number, limit) => sum + parseQuantity(limit!), 0);
    assert.ok(scratch < total, `${idOf(workload.object)}: emptyDirs (${scratch} B) fit in the ephemeral-storage limit (${total} B)`);
  }
}

/** The objects of deploy/tools/outputs.yaml (applied by hand, outside the overlays). */
function outputsPod(): KubeObject[] {
  return parseAllDocuments(readFileSync(join(repoRoot, "deploy/tools/outputs.yaml"), "utf8")).map((d) => d.toJS() as KubeObject);
}

/** The config sections that serving and calling read (lib/config/server.ts). */
const serverSections = ["server", "client"];

/**
 * The configuration a pod's sppo process builds at start-up: the ConfigMap file its --config names, mounted where the
 * pod mounts it, with the container's SPPO_* env on top, validated by the project's loadConfig. `sections` limits the
 * env applied to those config sections (checks that only read `server` and `client` use it).
 */
function configOf(objects: KubeObject[], workload: Workload, container: IContainer, sections?: string[]) {
  const where = idOf(workload.object);
  const path = flagValue(expandedArgs(container), "--config");
  assert.ok(path, `${where} passes --config`);
  const mount = container.volumeMounts?.find((m) => path.startsWith(`${m.mountPath}/`));
  assert.ok(mount, `${where}: --config ${path} is inside a mounted volume`);
  const volume = workload.pod.volumes?.find((v) => v.name === mount.name);
  assert.ok(volume?.configMap?.name, `${where}: ${mount.mountPath} is a ConfigMap`);
  const configMap = find(objects, "ConfigMap", volume.configMap.name);
  const key = path.slice(mount.mountPath.length + 1);
  const text = (configMap.data as Record<string, string> | undefined)?.[key];
  assert.ok(text, `${where}: ConfigMap ${configMap.metadata.name} has the key ${key}`);
  const env: NodeJS.ProcessEnv = {};
  for (const variable of container.env ?? []) {
    const section = /^SPPO_([A-Z0-9_]+?)__/.exec(variable.name)?.[1]?.toLowerCase();
    if (sections && section !== undefined && !sections.includes(section)) continue;
    env[variable.name] = variable.value;
  }
  const dir = mkdtempSync(join(tmpdir(), "sppo-deploy-config-"));
  try {
    const file = join(dir, key);
    writeFileSync(file, text);
    return loadConfig({ file, env });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("fields", () => {
  test("every field of every object is one its kind defines (a misspelt field fails here, not at kubectl apply)", () => {
    const objects = Object.keys(builds).flatMap((name) => renderedOf(name).map((object) => ({ label: builds[name], object })));
    objects.push(...outputsPod().map((object) => ({ label: "deploy/tools/outputs.yaml", object })));
    // The check itself must see a misspelling: one deliberately misspelt copy is checked with the real objects.
    const deployment = renderedOf("local").find((o) => o.kind === "Deployment")!;
    const misspelt = JSON.parse(JSON.stringify(deployment).replace('"readinessProbe"', '"readinesProbe"')) as KubeObject;
    const problems = unknownFields([...objects, { label: "misspelt", object: misspelt }]);
    assert.equal(problems.filter((p) => p.startsWith("misspelt ")).length, 1, `the misspelling is found: ${problems}`);
    assert.match(problems.find((p) => p.startsWith("misspelt "))!, /readinesProbe/);
    assert.deepEqual(problems.filter((p) => !p.startsWith("misspelt ")), []);
  });
});

describe("the deployment's config", () => {
  const task = join(repoRoot, "assets/default-task.yaml");
  test(
    "runs the same task as `npm start` (assets/default-task.yaml); only serving, paths and progress differ",
    { skip: existsSync(task) ? false : "assets/default-task.yaml is not in the repository" },
    () => {
      const objects = renderedOf("base");
      const loop = workloadOf(objects, "loop");
      const deployed = configOf(objects, loop, mainContainer(loop)) as Record<string, Record<string, unknown>>;
      const local = loadConfig({ file: task, env: {} }) as Record<string, Record<string, unknown>>;
      // What the cluster sets on purpose: how it serves and calls, the ports it exposes, no progress bars (no
      // terminal), and where the optimizer writes (its volume; set by env on its own pod).
      const clusterOnly: Record<string, string[]> = {
        server: ["*"],
        client: ["*"],
        pipeline: ["telemetryPort", "progress"],
        generator: ["optimizerTarget"],
        optimizer: ["checkpointDir", "policyDir"],
      };
      const differences: string[] = [];
      for (const section of Object.keys(local)) {
        const skipped = clusterOnly[section] ?? [];
        if (skipped.includes("*")) continue;
        for (const key of new Set([...Object.keys(local[section]), ...Object.keys(deployed[section])])) {
          if (skipped.includes(key)) continue;
          if (JSON.stringify(local[section][key]) !== JSON.stringify(deployed[section][key])) {
            differences.push(`${section}.${key}: default task ${JSON.stringify(local[section][key])}, deploy/base/sppo.yaml ${JSON.stringify(deployed[section][key])}`);
          }
        }
      }
      assert.deepEqual(differences, [], "copy these settings from assets/default-task.yaml into deploy/base/sppo.yaml");
    },
  );
});

describe("overlays", () => {
  const objectsOf = (name: OverlayName) => renderedOf(name);

  test("local: one replica of each service, small volumes, images never pulled", () => {
    const objects = objectsOf("local");
    for (const component of ["generator", "oracle", "optimizer"]) {
      assert.equal((workloadOf(objects, component).object.spec as { replicas: number }).replicas, 1, component);
    }
    for (const workload of workloads(objects)) assert.equal(mainContainer(workload).imagePullPolicy, "IfNotPresent");
    const claim = find(objects, "PersistentVolumeClaim", "sppo-run").spec as { resources: { requests: { storage: string } } };
    assert.ok(parseQuantity(claim.resources.requests.storage) <= 2 ** 31);
    const base = renderedOf("base");
    for (const component of ["generator", "oracle", "optimizer", "loop"]) {
      const small = mainContainer(workloadOf(objects, component)).resources?.requests?.memory;
      const full = mainContainer(workloadOf(base, component)).resources?.requests?.memory;
      assert.ok(parseQuantity(small!) < parseQuantity(full!), `${component} asks for less memory locally`);
    }
  });

  test("base scales the generator and the oracle out", () => {
    const objects = renderedOf("base");
    for (const component of ["generator", "oracle"]) {
      assert.ok((workloadOf(objects, component).object.spec as { replicas: number }).replicas >= 2, component);
    }
  });

  test("gpu: the generator and the optimizer get a GPU, tolerate GPU taints and run the GPU image", () => {
    const objects = objectsOf("gpu");
    for (const component of ["generator", "optimizer"]) {
      const workload = workloadOf(objects, component);
      const container = mainContainer(workload);
      assert.equal(String(container.resources?.limits?.["nvidia.com/gpu"]), "1", `${component} limits nvidia.com/gpu`);
      assert.ok(workload.pod.tolerations?.some((t) => t.key === "nvidia.com/gpu"), `${component} tolerates nvidia.com/gpu`);
    }
    assert.equal(mainContainer(workloadOf(objects, "oracle")).resources?.limits?.["nvidia.com/gpu"], undefined);
  });

  test("swap-oracle: no built-in oracle is left, and the loop calls the replacement", () => {
    const objects = objectsOf("swap-oracle");
    assert.deepEqual(
      objects.filter((o) => o.metadata.name === "sppo-oracle").map(idOf),
      [],
    );
    const args = expandedArgs(mainContainer(workloadOf(objects, "loop")));
    assert.equal(flagValue(args, "--oracle"), "dns:///pairrm-oracle.pairrm.svc.cluster.local:50052");
  });

  test("deploy/tools/outputs.yaml: a restricted pod that reads the loop's output volume", async () => {
    const objects = outputsPod();
    assert.equal(objects.length, 1);
    await validateObject(objects[0]);
    const [workload] = workloads(objects);
    assertRestricted(workload);
    assertResources(workload);
    const local = objectsOf("local");
    assert.equal(objects[0].metadata.namespace, "sppo");
    const claim = workload.pod.volumes?.find((v) => v.persistentVolumeClaim)?.persistentVolumeClaim;
    assert.equal(claim?.readOnly, true);
    const loop = workloadOf(local, "loop");
    const out = flagValue(expandedArgs(mainContainer(loop)), "--out");
    assert.equal(loop.pod.volumes?.find((v) => v.persistentVolumeClaim)?.persistentVolumeClaim?.claimName, claim?.claimName);
    assert.ok(mainContainer(workload).volumeMounts?.some((m) => m.mountPath === out && m.readOnly));
    assert.equal(mainContainer(workload).image, mainContainer(loop).image);
  });

  test("components: mtls mounts the certificate Secret and sets the server.tls and client.tls config keys", () => {
    const objects = renderedOf("all-components");
    find(objects, "PodMonitor", "sppo");
    for (const workload of workloads(objects)) {
      const container = mainContainer(workload);
      const where = idOf(workload.object);
      const mount = container.volumeMounts?.find((m) => m.mountPath === "/etc/sppo/tls");
      assert.ok(mount?.readOnly, `${where} mounts the certificates read-only`);
      assert.equal(workload.pod.volumes?.find((v) => v.name === mount.name)?.secret?.secretName, "sppo-tls");
      const config = configOf(objects, workload, container, serverSections);
      assert.deepEqual(config.server.tls, {
        certFile: "/etc/sppo/tls/tls.crt",
        keyFile: "/etc/sppo/tls/tls.key",
        clientCaFile: "/etc/sppo/tls/ca.crt",
      });
      assert.deepEqual(config.client.tls, {
        caFile: "/etc/sppo/tls/ca.crt",
        certFile: "/etc/sppo/tls/tls.crt",
        keyFile: "/etc/sppo/tls/tls.key",
      });
    }
  });
});
