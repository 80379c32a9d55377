/**
 * The worker-thread side of `WorkerPolicy` (worker-policy.ts): hosts the process's worker-run OrtPolicies (one per
 * policy version a generator holds) and answers the main thread's calls on them. Loaded by policy-worker.mjs, which
 * registers tsx first. One thread serves every policy, so a new version costs its sessions, not a new thread.
 *
 * Protocol (every request carries an id and the policy it is about; each gets exactly one reply with that id):
 *   { id, policy, op: "create", dir, options }    → { id, ok: { name, config, parameters } }
 *   { id, policy, op: "sample", prompts, options } → { id, ok: SampleResult[] }
 *   { id, policy, op: "score", pairs, options }   → { id, ok: Score[] }
 *   { id, policy, op: "refresh", dir }            → { id, ok: RefreshTiming & { config, parameters } }
 *   { id, policy, op: "dispose" }                 → { id, ok: null }
 *   a failure                                     → { id, error: { name, message, code?, kind? } }
 */
import { parentPort } from "node:worker_threads";
import { Code, type ErrorKind, RpcError } from "../../lib/errors.js";
import { createOrtPolicy, type OrtPolicy, type OrtPolicyOptions } from "./policy.js";

export type PolicyRequest = { id: number; policy: number } & (
  | { op: "create"; dir: string; options: OrtPolicyOptions }
  | { op: "sample"; prompts: number[][]; options: Parameters<OrtPolicy["sample"]>[1] }
  | { op: "score"; pairs: Parameters<OrtPolicy["score"]>[0]; options: Parameters<OrtPolicy["score"]>[1] }
  | { op: "refresh"; dir: string }
  | { op: "dispose" }
);

/** A failure as it crosses the thread boundary: enough to rebuild the error (an RpcError keeps its code and kind). */
export interface WorkerError {
  name: string;
  message: string;
  code?: number;
  kind?: ErrorKind;
}

export type PolicyReply = { id: number; ok: unknown } | { id: number; error: WorkerError };

const policies = new Map<number, OrtPolicy>();

async function handle(request: PolicyRequest): Promise<unknown> {
  if (request.op === "create") {
    const created = await createOrtPolicy(request.dir, { ...request.options, readTokenizer: false });
    policies.set(request.policy, created);
    return { name: created.name, config: created.config, parameters: created.parameters };
  }
  const policy = policies.get(request.policy);
  if (!policy) throw new RpcError(Code.UNAVAILABLE, `the policy worker holds no policy ${request.policy} (its creation failed, or it was disposed)`);
  switch (request.op) {
    case "sample":
      return policy.sample(request.prompts, request.options);
    case "score":
      return policy.score(request.pairs, request.options);
    case "refresh": {
      const timing = await policy.refresh(request.dir);
      return { ...timing, config: policy.config, parameters: policy.parameters };
    }
    case "dispose":
      policies.delete(request.policy);
      await policy.dispose();
      return null;
  }
}

const port = parentPort;
if (!port) throw new TypeError("models/onnx/policy-worker.ts runs in a worker thread (worker-policy.ts starts it)");
port.on("message", (request: PolicyRequest) => {
  // Calls overlap as they do on an OrtPolicy in the main thread; each is answered when it ends.
  handle(request).then(
    (ok) => port.postMessage({ id: request.id, ok } satisfies PolicyReply),
    (err: unknown) => {
      const e = err instanceof Error ? err : new Error(String(err));
      const rpc = e instanceof RpcError ? { code: e.code, kind: e.kind } : {};
      port.postMessage({ id: request.id, error: { name: e.name, message: e.message, ...rpc } } satisfies PolicyReply);
    },
  );
});
