/**
 * Data-parallel log-probs and gradients over worker threads. tfjs's wasm backend is single-threaded in Node, so one
 * process uses one core; DataParallel keeps a replica of the policy in each of `threads - 1` worker threads (each
 * with its own backend), splits a batch into shards, computes one shard on the calling thread and the others in the
 * workers, and sums the gradients. Replicas are refreshed automatically before each call when a parameter changed
 * (an optimizer's `assign` gives a variable new data, which is what is checked).
 *
 * Losses stay on the caller's side: `weightedLogProbGrads(pairs, w)` returns ∇θ Σ_b w_b · log π(y_b | x_b). A loss
 * L(logp) is trained by chaining: w = ∂L/∂logp at the current logp (from `logProbs`, or from the same call for
 * losses linear in logp, such as cross-entropy pretraining), then the caller's optimizer applies the gradients.
 *
 *   const dp = await DataParallel.create(model, { threads: 2 });
 *   const { logprobs } = await dp.logProbs(pairs);              // forward only, sharded
 *   const w = dLoss_dLogp(logprobs);                            // e.g. with tf.grad on a [B] tensor
 *   const { grads } = await dp.weightedLogProbGrads(pairs, w);  // = ∇θ L
 *   optimizer.apply(model.params, grads, lr); tf.dispose(grads);
 *   await dp.close();
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import * as tf from "@tensorflow/tfjs";
import type { BackendName } from "./backend.js";
import { makeBatch, type TokenPair } from "./batch.js";
import type { CausalLM } from "./model.js";
import type { FromWorker, ToWorker, WireParams } from "./parallel-worker.js";
import { sequenceLogProbs } from "./score.js";
import { type NamedGrads, valueAndGrads } from "./train.js";
import { Code, RpcError } from "../lib/errors.js";

export interface DataParallelOptions {
  /** Threads in all, the calling one included. @default os.availableParallelism() */
  threads?: number;
  /** Backend of the worker replicas. @default the calling thread's tfjs backend */
  backend?: BackendName;
}

interface WorkerSlot {
  worker: Worker;
  /** The variable data each parameter had when last sent, to detect updates. */
  sent: Map<string, object>;
}

/** Shards [0, n) into `parts` contiguous ranges of near-equal token counts. */
function shard(pairs: TokenPair[], parts: number): [number, number][] {
  const sizes = pairs.map((p) => p.prompt.length + p.response.length);
  const total = sizes.reduce((a, b) => a + b, 0);
  const out: [number, number][] = [];
  let start = 0;
  let acc = 0;
  for (let part = 0; part < parts; part++) {
    const target = (total * (part + 1)) / parts;
    let end = start;
    while (end < pairs.length && (part === parts - 1 || acc + sizes[end] / 2 <= target)) acc += sizes[end++];
    out.push([start, end]);
    start = end;
  }
  return out;
}

export class DataParallel {
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (m: FromWorker & { kind: "done" }) => void; reject: (e: Error) => void }>();

  private constructor(
    private readonly model: CausalLM,
    private readonly slots: WorkerSlot[],
  ) {
    for (const slot of slots) {
      slot.worker.on("message", (m: FromWorker) => {
        if (m.kind === "done") {
          this.pending.get(m.id)?.resolve(m);
          this.pending.delete(m.id);
        } else if (m.kind === "error" && m.id !== undefined) {
          this.pending.get(m.id)?.reject(new RpcError(Code.INTERNAL, `data-parallel worker: ${m.message}`));
          this.pending.delete(m.id);
        }
      });
      slot.worker.on("error", (err) => {
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      });
    }
  }

  /** Starts `threads - 1` workers holding replicas of `model` (its current weights). */
  static async create(model: CausalLM, options: DataParallelOptions = {}): Promise<DataParallel> {
    const threads = options.threads ?? availableParallelism();
    if (!Number.isInteger(threads) || threads < 1) throw new TypeError(`threads must be an integer ≥ 1, got ${threads}`);
    const backend = options.backend ?? (tf.getBackend() as BackendName);
    // Workers run TypeScript through tsx, registered in the worker before it imports its entry module.
    const api = import.meta.resolve("tsx/esm/api");
    const entry = new URL("./parallel-worker.ts", import.meta.url).href;
    const bootstrap = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`;
    const slots: WorkerSlot[] = [];
    try {
      for (let i = 1; i < threads; i++) {
        const worker = new Worker(bootstrap, { eval: true });
        const slot = { worker, sent: new Map<string, object>() };
        slots.push(slot);
        const ready = new Promise<void>((resolve, reject) => {
          const onMessage = (m: FromWorker) => {
            if (m.kind === "ready") resolve();
            else if (m.kind === "error") reject(new RpcError(Code.INTERNAL, `data-parallel worker failed to start: ${m.message}`));
            else return;
            worker.off("message", onMessage);
          };
          worker.on("message", onMessage);
          worker.once("error", reject);
        });
        const params = DataParallel.wire(model, slot, true);
        worker.postMessage({ kind: "init", backend, config: model.config, params } satisfies ToWorker);
        await ready;
      }
    } catch (err) {
      await Promise.all(slots.map((s) => s.worker.terminate()));
      throw err;
    }
    return new DataParallel(model, slots);
  }

  /** Threads in use, the calling one included. */
  get threads(): number {
    return this.slots.length + 1;
  }

  /** Parameters whose data changed since last sent to `slot` (all with `all`), recorded as sent. */
  private static wire(model: CausalLM, slot: WorkerSlot, all = false): WireParams {
    const out: WireParams = [];
    for (const [name, p] of model.params) {
      if (!all && slot.sent.get(name) === p.dataId) continue;
      out.push([name, [...p.shape], p.dataSync() as Float32Array]);
      slot.sent.set(name, p.dataId);
    }
    return out;
  }

  private async run(pairs: TokenPair[], weights: number[] | undefined, padId: number): Promise<{ logprobs: number[]; grads?: NamedGrads }> {
    if (weights && weights.length !== pairs.length) throw new RangeError(`weights has ${weights.length} entries for ${pairs.length} pairs`);
    const ranges = shard(pairs, this.threads);
    const [mine, ...theirs] = ranges;
    const replies = theirs.map(([start, end], i) => {
      const slot = this.slots[i];
      const changed = DataParallel.wire(this.model, slot);
      if (changed.length > 0) slot.worker.postMessage({ kind: "weights", params: changed } satisfies ToWorker);
      if (start === end) return Promise.resolve(undefined);
      const id = this.nextId++;
      const done = new Promise<FromWorker & { kind: "done" }>((resolve, reject) => this.pending.set(id, { resolve, reject }));
      slot.worker.postMessage({ kind: "work", id, pairs: pairs.slice(start, end), weights: weights?.slice(start, end), padId } satisfies ToWorker);
      return done;
    });
    // The calling thread's shard, while the workers run theirs.
    const logprobs = new Array<number>(pairs.length).fill(0);
    let grads: NamedGrads | undefined;
    if (mine[1] > mine[0]) {
      const batch = makeBatch(pairs.slice(mine[0], mine[1]), padId);
      try {
        if (weights) {
          const w = tf.tensor1d(weights.slice(mine[0], mine[1]));
          let values: Float32Array = new Float32Array(0);
          const out = valueAndGrads(this.model, () => {
            const lp = sequenceLogProbs(this.model, batch);
            values = lp.dataSync() as Float32Array;
            return lp.mul(w).sum() as tf.Scalar;
          });
          tf.dispose([out.value, w]);
          grads = out.grads;
          values.forEach((v, j) => {
            logprobs[mine[0] + j] = v;
          });
        } else {
          const lp = sequenceLogProbs(this.model, batch);
          lp.dataSync().forEach((v, j) => {
            logprobs[mine[0] + j] = v;
          });
          lp.dispose();
        }
      } finally {
        batch.dispose();
      }
    }
    const results = await Promise.all(replies);
    results.forEach((r, i) => {
      if (!r) return;
      const start = theirs[i][0];
      r.logprobs.forEach((v, j) => {
        logprobs[start + j] = v;
      });
      if (weights && r.grads) {
        grads ??= {};
        for (const [name, shape, data] of r.grads) {
          const g = tf.tensor(data, shape, "float32");
          if (grads[name]) {
            const sum = grads[name].add(g);
            tf.dispose([grads[name], g]);
            grads[name] = sum;
          } else grads[name] = g;
        }
      }
    });
    return { logprobs, grads: weights ? (grads ?? {}) : undefined };
  }

  /** Summed response log-probs of every pair (forward only), sharded over the threads. */
  async logProbs(pairs: TokenPair[], options: { padId?: number } = {}): Promise<{ logprobs: number[] }> {
    const { logprobs } = await this.run(pairs, undefined, options.padId ?? 0);
    return { logprobs };
  }

  /**
   * ∇θ Σ_b weights[b] · log π(y_b | x_b) by HF parameter name (summed over shards; the caller disposes it), with the
   * log-probs of the same forward pass.
   */
  async weightedLogProbGrads(pairs: TokenPair[], weights: number[], options: { padId?: number } = {}): Promise<{ logprobs: number[]; grads: NamedGrads }> {
    const { logprobs, grads } = await this.run(pairs, weights, options.padId ?? 0);
    return { logprobs, grads: grads! };
  }

  /** Stops the workers. */
  async close(): Promise<void> {
    for (const p of this.pending.values()) p.reject(new RpcError(Code.UNAVAILABLE, "DataParallel closed"));
    this.pending.clear();
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
