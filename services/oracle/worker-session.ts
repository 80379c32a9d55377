/**
 * An onnxruntime session living in a worker thread (session-worker.mjs explains why): the main thread posts padded
 * int64 batches (their buffers are transferred, not copied) and gets the output back. Runs are answered in order.
 */
import { Worker } from "node:worker_threads";
import type * as ort from "onnxruntime-node";
import { Code, RpcError } from "../../lib/errors.js";

export interface RunOutput {
  data: Float32Array | Float64Array;
  dims: number[];
}

/** What the oracle needs of a session: its signature, runs and release. */
/** A session's inputs and outputs: names and metadata, as onnxruntime describes them. */
export interface SessionIO {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly ort.InferenceSession.ValueMetadata[];
  readonly outputMetadata: readonly ort.InferenceSession.ValueMetadata[];
}

export interface OracleSession {
  /** The model's inputs and outputs. */
  readonly io: SessionIO;
  /** Runs int64 feeds ({name: {data, dims}}) and returns one output. The feeds' buffers may be transferred. */
  run(feeds: Record<string, { data: BigInt64Array; dims: number[] }>, output: string): Promise<RunOutput>;
  release(): Promise<void>;
}

interface Loaded {
  inputNames: string[];
  outputNames: string[];
  inputMetadata: ort.InferenceSession.ValueMetadata[];
  outputMetadata: ort.InferenceSession.ValueMetadata[];
}

type WorkerReply =
  | ({ type: "loaded" } & Loaded)
  | { type: "result"; id: number; data: Float32Array | Float64Array; dims: number[] }
  | { type: "error"; id?: number; message: string }
  | { type: "released" };

export class WorkerSession implements OracleSession {
  private readonly pending = new Map<number, { resolve: (out: RunOutput) => void; reject: (err: Error) => void }>();
  private nextId = 0;
  private failure: Error | undefined;
  private released: (() => void) | undefined;

  private constructor(
    private readonly worker: Worker,
    private readonly loaded: Loaded,
  ) {
    worker.on("message", (reply: WorkerReply) => {
      if (reply.type === "released") return this.released?.();
      if (reply.type !== "result" && reply.type !== "error") return;
      const p = reply.id === undefined ? undefined : this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id!);
      if (reply.type === "result") p.resolve({ data: reply.data, dims: reply.dims });
      else p.reject(new RpcError(Code.INTERNAL, `the ONNX worker: ${reply.message}`));
    });
    const fail = (err: Error) => {
      this.failure = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      this.released?.();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new RpcError(Code.UNAVAILABLE, `the ONNX worker thread exited (code ${code})`)));
  }

  /** Starts the worker and loads the model in it; rejects with onnxruntime's message when it cannot. */
  static async create(path: string, options: ort.InferenceSession.SessionOptions): Promise<WorkerSession> {
    const worker = new Worker(new URL("./session-worker.mjs", import.meta.url));
    const loaded = await new Promise<Loaded>((resolve, reject) => {
      const onExit = (code: number) => reject(new RpcError(Code.UNAVAILABLE, `the ONNX worker thread exited (code ${code}) while loading`));
      worker.once("error", reject);
      worker.once("exit", onExit);
      worker.once("message", (reply: WorkerReply) => {
        worker.off("error", reject);
        worker.off("exit", onExit);
        if (reply.type === "loaded") resolve(reply);
        else reject(new RpcError(Code.INTERNAL, reply.type === "error" ? reply.message : `unexpected reply ${reply.type}`));
      });
      worker.postMessage({ type: "load", path, options });
    }).catch(async (err) => {
      await worker.terminate();
      throw err;
    });
    return new WorkerSession(worker, loaded);
  }

  get io(): SessionIO {
    return this.loaded;
  }

  run(feeds: Record<string, { data: BigInt64Array; dims: number[] }>, output: string): Promise<RunOutput> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<RunOutput>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const transfer = Object.values(feeds).map((f) => f.data.buffer as ArrayBuffer);
      this.worker.postMessage({ type: "run", id, feeds, output }, transfer);
    });
  }

  async release(): Promise<void> {
    if (!this.failure) {
      await new Promise<void>((resolve) => {
        this.released = resolve;
        this.worker.postMessage({ type: "release" });
      });
    }
    this.worker.removeAllListeners("exit");
    await this.worker.terminate();
  }
}
