/**
 * The worker side of models/parallel.ts: holds a replica of the policy on its own tfjs backend and computes, for the
 * shard of a batch it is sent, the response log-probs and (optionally) the gradient of Σ_b w_b · log π(y_b | x_b).
 * Started by DataParallel only; messages are described there.
 */
import { parentPort } from "node:worker_threads";
import * as tf from "@tensorflow/tfjs";
import { type BackendName, initBackend } from "./backend.js";
import { makeBatch, type TokenPair } from "./batch.js";
import type { ModelConfig } from "./config.js";
import { createModel } from "./io.js";
import type { CausalLM } from "./model.js";
import { sequenceLogProbs } from "./score.js";
import { valueAndGrads } from "./train.js";

export type WireParams = [name: string, shape: number[], data: Float32Array][];

export type ToWorker =
  | { kind: "init"; backend: BackendName; config: ModelConfig; params: WireParams }
  | { kind: "weights"; params: WireParams }
  | { kind: "work"; id: number; pairs: TokenPair[]; weights?: number[]; padId: number };

export type FromWorker =
  | { kind: "ready"; backend: string }
  | { kind: "done"; id: number; logprobs: Float32Array; grads?: WireParams }
  | { kind: "error"; id?: number; message: string };

let model: CausalLM | undefined;
const port = parentPort!;

function handle(msg: ToWorker): FromWorker | undefined {
  if (msg.kind === "weights") {
    for (const [name, shape, data] of msg.params) {
      const p = model!.params.get(name)!;
      tf.tidy(() => p.assign(tf.tensor(data, shape, "float32")));
    }
    return undefined;
  }
  if (msg.kind !== "work") return undefined;
  const batch = makeBatch(msg.pairs, msg.padId);
  try {
    if (!msg.weights) {
      const lp = sequenceLogProbs(model!, batch);
      const logprobs = lp.dataSync() as Float32Array;
      lp.dispose();
      return { kind: "done", id: msg.id, logprobs };
    }
    const w = tf.tensor1d(msg.weights);
    let logprobs: Float32Array = new Float32Array(0);
    const { value, grads } = valueAndGrads(model!, () => {
      const lp = sequenceLogProbs(model!, batch);
      logprobs = lp.dataSync() as Float32Array;
      return lp.mul(w).sum() as tf.Scalar;
    });
    const wire: WireParams = Object.entries(grads).map(([name, g]) => [name, [...g.shape], g.dataSync() as Float32Array]);
    tf.dispose([value, grads, w]);
    return { kind: "done", id: msg.id, logprobs, grads: wire };
  } finally {
    batch.dispose();
  }
}

port.on("message", async (msg: ToWorker) => {
  try {
    if (msg.kind === "init") {
      const info = await initBackend(msg.backend);
      const params = new Map<string, tf.Variable>();
      for (const [name, shape, data] of msg.params) params.set(name, tf.tidy(() => tf.variable(tf.tensor(data, shape, "float32"), true)));
      model = createModel(msg.config, params);
      port.postMessage({ kind: "ready", backend: info.name } satisfies FromWorker);
      return;
    }
    const reply = handle(msg);
    if (reply) {
      const transfer = reply.kind === "done" ? [reply.logprobs.buffer, ...(reply.grads ?? []).map(([, , d]) => d.buffer)] : [];
      port.postMessage(reply, transfer as ArrayBuffer[]);
    }
  } catch (err) {
    port.postMessage({ kind: "error", id: msg.kind === "work" ? msg.id : undefined, message: (err as Error).stack ?? String(err) } satisfies FromWorker);
  }
});
