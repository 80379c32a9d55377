/**
 * deploy/ NetworkPolicies, checked by what they allow rather than how they are written: a small evaluator of the
 * networking.k8s.io/v1 semantics (a pod selected by no policy of a direction is open in it; selected ones allow only
 * what some rule allows; a connection needs the source's egress and the destination's ingress) runs every
 * connection between the rendered pods and asserts the matrix the deployment promises: only the loop (and the
 * generators, which pull weights) reach the optimizer, only the loop reaches the generators and the oracles.
 *
 *   node --import tsx --test test/deploy/networkpolicy.test.ts
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { ILabelSelector } from "@kubernetes-models/apimachinery/apis/meta/v1/LabelSelector";
import type { INetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import type { INetworkPolicyPeer } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicyPeer";
import type { INetworkPolicyPort } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicyPort";
import { componentOf, type KubeObject, mainContainer, overlays, render, workloads } from "./render.js";

/** A pod as the policies see it: namespace, labels and named container ports. */
export interface Endpoint {
  namespace: string;
  namespaceLabels: Record<string, string>;
  labels: Record<string, string>;
  ports: Record<string, number>;
}

/** Whether a label selector matches labels (matchLabels and matchExpressions; an empty selector matches all). */
export function selects(selector: ILabelSelector, labels: Record<string, string>): boolean {
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) if (labels[key] !== value) return false;
  for (const { key, operator, values = [] } of selector.matchExpressions ?? []) {
    const has = key in labels;
    const ok =
      operator === "In" ? has && values.includes(labels[key])
      : operator === "NotIn" ? !has || !values.includes(labels[key])
      : operator === "Exists" ? has
      : operator === "DoesNotExist" ? !has
      : assert.fail(`unknown selector operator ${operator}`);
    if (!ok) return false;
  }
  return true;
}

/** Whether a peer of a policy in `policyNamespace` covers the pod `other` (ipBlocks never match pods here). */
function peerMatches(peer: INetworkPolicyPeer, policyNamespace: string, other: Endpoint): boolean {
  if (peer.ipBlock) return false;
  const namespaceOk = peer.namespaceSelector ? selects(peer.namespaceSelector, other.namespaceLabels) : other.namespace === policyNamespace;
  const podOk = peer.podSelector ? selects(peer.podSelector, other.labels) : true;
  return namespaceOk && podOk;
}

/** Whether a rule's port list admits TCP `port`; named ports resolve against `named` (the destination pod's ports). */
function portMatches(ports: INetworkPolicyPort[] | undefined, port: number, named: Record<string, number>): boolean {
  if (!ports || ports.length === 0) return true;
  return ports.some((p) => {
    if ((p.protocol ?? "TCP") !== "TCP") return false;
    if (p.port === undefined) return true;
    const first = typeof p.port === "number" ? p.port : named[p.port];
    if (first === undefined) return false;
    return p.endPort !== undefined ? port >= first && port <= p.endPort : port === first;
  });
}

/** Whether NetworkPolicies let `from` open a TCP connection to `to` on `port`. */
export function allowed(policies: INetworkPolicy[], from: Endpoint, to: Endpoint, port: number): boolean {
  const types = (policy: INetworkPolicy) => policy.spec?.policyTypes ?? (policy.spec?.egress ? ["Ingress", "Egress"] : ["Ingress"]);
  const namespaceOf = (policy: INetworkPolicy) => policy.metadata?.namespace ?? "default";

  const egressPolicies = policies.filter(
    (p) => namespaceOf(p) === from.namespace && types(p).includes("Egress") && selects(p.spec?.podSelector ?? {}, from.labels),
  );
  const egressOk =
    egressPolicies.length === 0 ||
    egressPolicies.some((p) =>
      (p.spec?.egress ?? []).some(
        (rule) => (!rule.to || rule.to.length === 0 || rule.to.some((peer) => peerMatches(peer, namespaceOf(p), to))) && portMatches(rule.ports, port, to.ports),
      ),
    );

  const ingressPolicies = policies.filter(
    (p) => namespaceOf(p) === to.namespace && types(p).includes("Ingress") && selects(p.spec?.podSelector ?? {}, to.labels),
  );
  const ingressOk =
    ingressPolicies.length === 0 ||
    ingressPolicies.some((p) =>
      (p.spec?.ingress ?? []).some(
        (rule) =>
          (!rule.from || rule.from.length === 0 || rule.from.some((peer) => peerMatches(peer, namespaceOf(p), from))) &&
          portMatches(rule.ports, port, to.ports),
      ),
    );
  return egressOk && ingressOk;
}

function endpointsOf(objects: KubeObject[]): Map<string, Endpoint> {
  const namespaceLabels = (name: string) => ({
    "kubernetes.io/metadata.name": name,
    ...(objects.find((o) => o.kind === "Namespace" && o.metadata.name === name)?.metadata.labels ?? {}),
  });
  const out = new Map<string, Endpoint>();
  for (const workload of workloads(objects)) {
    const namespace = workload.object.metadata.namespace ?? "default";
    const ports: Record<string, number> = {};
    for (const port of mainContainer(workload).ports ?? []) if (port.name) ports[port.name] = port.containerPort;
    out.set(componentOf(workload.podLabels)!, { namespace, namespaceLabels: namespaceLabels(namespace), labels: workload.podLabels, ports });
  }
  return out;
}

/** Pods the rendered objects do not contain, on the other side of the policies. */
const strangers: Record<string, Endpoint> = {
  "a pod in the namespace": {
    namespace: "sppo",
    namespaceLabels: { "kubernetes.io/metadata.name": "sppo" },
    labels: { app: "debug" },
    ports: {},
  },
  "a pod in another namespace": {
    namespace: "other",
    namespaceLabels: { "kubernetes.io/metadata.name": "other" },
    labels: { "app.kubernetes.io/name": "sppo", "app.kubernetes.io/component": "loop" },
    ports: {},
  },
  "Prometheus in the monitoring namespace": {
    namespace: "monitoring",
    namespaceLabels: { "kubernetes.io/metadata.name": "monitoring" },
    labels: { "app.kubernetes.io/name": "prometheus" },
    ports: {},
  },
};

const grpcPorts: Record<string, number> = { generator: 50051, oracle: 50052, optimizer: 50053, loop: 50054 };
const metricsPort = 9464;

describe("NetworkPolicy evaluator", () => {
  const pod = (labels: Record<string, string>, namespace = "ns"): Endpoint => ({
    namespace,
    namespaceLabels: { "kubernetes.io/metadata.name": namespace },
    labels,
    ports: { grpc: 80 },
  });
  const policy = (spec: INetworkPolicy["spec"], namespace = "ns"): INetworkPolicy => ({
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { name: "p", namespace },
    spec,
  });

  test("with no policy everything is open; a deny-all closes both directions", () => {
    const a = pod({ app: "a" });
    const b = pod({ app: "b" });
    assert.equal(allowed([], a, b, 80), true);
    const deny = policy({ podSelector: {}, policyTypes: ["Ingress", "Egress"] });
    assert.equal(allowed([deny], a, b, 80), false);
  });

  test("an ingress rule admits the selected peers on the named port only, and egress must allow it too", () => {
    const a = pod({ app: "a" });
    const b = pod({ app: "b" });
    const c = pod({ app: "c" });
    const ingress = policy({
      podSelector: { matchLabels: { app: "b" } },
      policyTypes: ["Ingress"],
      ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: "app", operator: "In", values: ["a"] }] } }], ports: [{ port: "grpc" }] }],
    });
    assert.equal(allowed([ingress], a, b, 80), true);
    assert.equal(allowed([ingress], a, b, 81), false);
    assert.equal(allowed([ingress], c, b, 80), false);
    assert.equal(allowed([ingress], pod({ app: "a" }, "elsewhere"), b, 80), false, "podSelector alone means the policy's namespace");
    const noEgress = policy({ podSelector: { matchLabels: { app: "a" } }, policyTypes: ["Egress"] });
    assert.equal(allowed([ingress, noEgress], a, b, 80), false);
  });

  test("a namespaceSelector peer admits pods of the namespaces it selects", () => {
    const b = pod({ app: "b" });
    const open = policy({ podSelector: {}, policyTypes: ["Ingress"], ingress: [{ from: [{ namespaceSelector: {} }], ports: [{ port: 80, protocol: "TCP" }] }] });
    assert.equal(allowed([open], pod({}, "x"), b, 80), true);
    const one = policy({ podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "x" } } }] }] });
    assert.equal(allowed([one], pod({}, "x"), b, 80), true);
    assert.equal(allowed([one], pod({}, "y"), b, 80), false);
  });
});

for (const overlay of overlays) {
  describe(`NetworkPolicies of deploy/overlays/${overlay}`, () => {
    const objects = render(`deploy/overlays/${overlay}`);
    const policies = objects.filter((o) => o.kind === "NetworkPolicy") as unknown as INetworkPolicy[];
    const pods = endpointsOf(objects);
    const components = [...pods.keys()];
    /** Who may connect to whose gRPC port: every other pair must be refused. */
    const expected = new Set(["loop->generator", "loop->oracle", "loop->optimizer", "generator->optimizer"]);

    test("the policies cover every pod, in both directions", () => {
      for (const [component, endpoint] of pods) {
        for (const type of ["Ingress", "Egress"] as const) {
          assert.ok(
            policies.some((p) => (p.spec?.policyTypes ?? []).includes(type) && selects(p.spec?.podSelector ?? {}, endpoint.labels)),
            `${component}: a policy restricts ${type}`,
          );
        }
      }
    });

    test("gRPC: only the loop reaches the services, and only the loop and the generators reach the optimizer", () => {
      const got: string[] = [];
      for (const from of components) {
        // The loop's own port is telemetry, readable from the whole namespace (next test).
        for (const to of components.filter((c) => c !== "loop")) {
          if (from !== to && allowed(policies, pods.get(from)!, pods.get(to)!, grpcPorts[to])) got.push(`${from}->${to}`);
        }
      }
      const want = [...expected].filter((pair) => pair.split("->").every((c) => pods.has(c)));
      assert.deepEqual(got.sort(), want.sort());
    });

    test("telemetry: every pod of the namespace can watch the loop", () => {
      for (const from of components) {
        if (from !== "loop") assert.ok(allowed(policies, pods.get(from)!, pods.get("loop")!, grpcPorts.loop), `${from} -> loop:50054`);
      }
    });

    test("strangers reach no gRPC port but the loop's telemetry from inside the namespace", () => {
      for (const [who, stranger] of Object.entries(strangers)) {
        for (const to of components) {
          const ok = allowed(policies, stranger, pods.get(to)!, grpcPorts[to]);
          const telemetryFromNamespace = to === "loop" && stranger.namespace === "sppo";
          assert.equal(ok, telemetryFromNamespace, `${who} -> ${to}:${grpcPorts[to]}`);
        }
      }
    });

    test("Prometheus, wherever it runs, scrapes every pod's metrics port", () => {
      const prometheus = strangers["Prometheus in the monitoring namespace"];
      for (const to of components) assert.ok(allowed(policies, prometheus, pods.get(to)!, metricsPort), `metrics of ${to}`);
    });

    test("no pod connects outside the cluster, except DNS", () => {
      const internet: Endpoint = { namespace: "", namespaceLabels: {}, labels: {}, ports: {} };
      for (const from of components) {
        // An outside address is neither a pod nor a namespace: only port-only rules (DNS) reach it.
        assert.equal(allowed(policies, pods.get(from)!, internet, 443), false, `${from} -> the internet:443`);
        const dns: Endpoint = {
          namespace: "kube-system",
          namespaceLabels: { "kubernetes.io/metadata.name": "kube-system" },
          labels: { "k8s-app": "kube-dns" },
          ports: {},
        };
        const egressOnly = policies.filter((p) => (p.spec?.policyTypes ?? []).includes("Egress"));
        assert.ok(allowed(egressOnly, pods.get(from)!, dns, 53), `${from} resolves names`);
      }
    });

    if (overlay === "swap-oracle") {
      test("the loop reaches the replacement oracle's namespace on its port, and nothing else does", () => {
        const replacement: Endpoint = {
          namespace: "pairrm",
          namespaceLabels: { "kubernetes.io/metadata.name": "pairrm" },
          labels: { app: "pairrm-oracle" },
          ports: {},
        };
        const egressOnly = policies.filter((p) => (p.spec?.policyTypes ?? []).includes("Egress"));
        for (const from of components) {
          assert.equal(allowed(egressOnly, pods.get(from)!, replacement, 50052), from === "loop", `${from} -> pairrm:50052`);
        }
        assert.equal(allowed(egressOnly, pods.get("loop")!, replacement, 50051), false);
      });
    }
  });
}
