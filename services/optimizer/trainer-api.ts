/**
 * The trainer as the gRPC handlers see it: asynchronous, so that it can live in this thread (`inProcessTrainer`, for
 * tests and small models) or in a worker thread (`startTrainerWorker`, the default for serving). In a worker, a
 * training step that takes many seconds no longer blocks the server's event loop: health probes, keepalive pings
 * (a blocked loop misses their acks and the connection is dropped mid-stream) and GetWeights keep being answered.
 *
 * Messages between the threads are protobuf binaries (TrainRequest in; TelemetryEvent, PolicyVersion out) and plain
 * JSON-safe objects; errors keep their gRPC code.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { type PolicyVersion, PolicyVersionSchema } from "../../gen/sppo/v1/common_pb.js";
import { type TrainRequest, TrainRequestSchema } from "../../gen/sppo/v1/optimizer_pb.js";
import { type TelemetryEvent, TelemetryEventSchema } from "../../gen/sppo/v1/telemetry_pb.js";
import type { OptimizerConfig } from "../../lib/config/optimizer.js";
import { Code, type ErrorKind, RpcError } from "../../lib/errors.js";
import { directoryManifest } from "../../lib/weights/index.js";
import { type CheckpointEntry, listCheckpoints } from "./checkpoint.js";
import type { Trainer } from "./trainer.js";
import type { VersionFiles } from "./versions.js";

/** What the Optimizer service needs of a trainer. */
export interface TrainerApi {
  /** Handles one Train request; resolves to the telemetry it produced. */
  handle(request: TrainRequest): Promise<TelemetryEvent[]>;
  listVersions(): Promise<PolicyVersion[]>;
  versionFiles(version: number): Promise<VersionFiles>;
  saveCheckpoint(): Promise<CheckpointEntry & { policy: PolicyVersion; runId: string }>;
  listCheckpoints(): Promise<CheckpointEntry[]>;
  /** Frees the model (and ends the worker). */
  close(): Promise<void>;
}

/**
 * Runs calls one at a time, in order: an engine that steps asynchronously must not see a checkpoint (or the next
 * request) start in the middle of a step.
 */
export function serialized(): <T>(work: () => T | Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(work: () => T | Promise<T>) => {
    const run = tail.then(work);
    tail = run.catch(() => {});
    return run;
  };
}

/** A trainer in this thread. */
export function inProcessTrainer(trainer: Trainer): TrainerApi {
  const serial = serialized();
  return {
    handle: (request) => serial(() => trainer.handleAsync(request)),
    listVersions: async () => trainer.listVersions(),
    versionFiles: async (version) => trainer.versionFiles(version),
    saveCheckpoint: () => serial(() => trainer.saveCheckpoint()),
    listCheckpoints: async () => trainer.listCheckpoints(),
    close: () => serial(() => trainer.dispose()),
  };
}

/** Requests to the worker. */
export type WorkerRequest = { id: number; op: "handle"; request: Uint8Array } | { id: number; op: "saveCheckpoint" | "close" };

/** The published versions as the worker reports them: the message (binary) and its directory. */
export type WorkerVersions = { policy: Uint8Array; dir: string }[];

/** What the main thread answers from, as of the worker's last reply: the current run's versions and checkpoint folder. */
export interface WorkerView {
  versions: WorkerVersions;
  checkpointDir: string;
}

/**
 * Replies from the worker: `value` is op-specific (binaries for messages), `error` keeps the gRPC code; `view`
 * (after every request) keeps the main thread's copy of the published versions and checkpoint folder current.
 */
export type WorkerReply = { id: number; value: unknown; view: WorkerView } | { id: number; error: WorkerError; view: WorkerView };

/** The first message of a worker: ready (with the backend it chose) or failed to open. */
export type WorkerHello =
  | { ready: true; backend: string; engine: string; iteration: number; step: number; view: WorkerView }
  | { ready: false; error: WorkerError };

/** An error crossing the thread boundary: an RpcError's code, field and kind, or a plain throw's message and stack. */
export interface WorkerError {
  code?: number;
  message: string;
  field?: string;
  kind?: ErrorKind;
  /** The worker's stack, for a throw that was not an RpcError (a bug): kept as the cause, for logs. */
  stack?: string;
}

/** The worker's side: what `toError` rebuilds on this side. */
export function workerError(err: unknown): WorkerError {
  if (err instanceof RpcError) return { code: err.code, message: err.message, field: err.field, kind: err.kind };
  return err instanceof Error ? { message: err.message, stack: err.stack } : { message: String(err) };
}

function toError(e: WorkerError): RpcError {
  const cause = e.stack === undefined ? undefined : Object.assign(new Error(e.message), { stack: e.stack });
  return new RpcError((e.code ?? Code.UNKNOWN) as Code, e.message, { field: e.field, kind: e.kind, ...(cause ? { cause } : {}) });
}

/**
 * Starts a worker thread that initialises the tfjs backend (`config.backend`) and opens the trainer there
 * (trainer-worker.ts); resolves once it is ready, rejects with the worker's error when it cannot open.
 *
 * Only Train requests and SaveCheckpoint go to the worker (they need the model; they queue behind a running step).
 * Versions, their files and the checkpoint list are answered in this thread — from the worker's latest report and
 * from disk, hashing asynchronously — so that they are never stuck behind a step.
 */
export async function startTrainerWorker(config: OptimizerConfig): Promise<TrainerApi & { backend: string; engine: string; iteration: number; step: number }> {
  // The bootstrap registers tsx in the worker, so that this works however the main thread loaded TypeScript.
  const worker = new Worker(fileURLToPath(new URL("./trainer-worker.mjs", import.meta.url)), { workerData: { config }, execArgv: [] });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let dead: Error | undefined;
  const hello = new Promise<WorkerHello>((resolve, reject) => {
    worker.once("message", (m: WorkerHello) => resolve(m));
    worker.once("error", reject);
  });
  const failAll = (err: Error) => {
    dead ??= err;
    for (const p of pending.values()) p.reject(dead);
    pending.clear();
  };
  worker.on("error", (err) => failAll(new RpcError(Code.INTERNAL, `optimizer trainer thread failed: ${err.message}`, { cause: err })));
  worker.on("exit", (code) => failAll(new RpcError(Code.UNAVAILABLE, `optimizer trainer thread exited (code ${code})`)));
  const first = await hello;
  if (!first.ready) {
    await worker.terminate();
    throw toError(first.error);
  }
  const toVersions = (vs: WorkerVersions) => vs.map((v) => ({ policy: fromBinary(PolicyVersionSchema, v.policy), dir: v.dir }));
  let versions = toVersions(first.view.versions);
  let checkpointDir = first.view.checkpointDir;
  worker.on("message", (reply: WorkerReply) => {
    versions = toVersions(reply.view.versions);
    checkpointDir = reply.view.checkpointDir;
    const p = pending.get(reply.id);
    if (!p) return;
    pending.delete(reply.id);
    if ("error" in reply) p.reject(toError(reply.error));
    else p.resolve(reply.value);
  });
  const call = <T>(message: Omit<WorkerRequest, "id"> & Record<string, unknown>): Promise<T> => {
    if (dead) return Promise.reject(dead);
    const id = nextId++;
    return new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.postMessage({ ...message, id });
    });
  };
  const version = (b: Uint8Array) => fromBinary(PolicyVersionSchema, b);
  return {
    backend: first.backend,
    engine: first.engine,
    iteration: first.iteration,
    step: first.step,
    handle: async (request) => (await call<Uint8Array[]>({ op: "handle", request: toBinary(TrainRequestSchema, request) })).map((b) => fromBinary(TelemetryEventSchema, b)),
    listVersions: async () => versions.map((v) => v.policy),
    versionFiles: async (v) => {
      const record = versions.find((x) => x.policy.version === v);
      if (!record) throw new RpcError(Code.NOT_FOUND, `policy version ${v} does not exist (latest is ${versions.at(-1)?.policy.version})`);
      const { files } = await directoryManifest(record.dir);
      return { policy: record.policy, dir: record.dir, files };
    },
    saveCheckpoint: async () => {
      const r = await call<CheckpointEntry & { policy: Uint8Array; runId: string }>({ op: "saveCheckpoint" });
      return { ...r, policy: version(r.policy) };
    },
    listCheckpoints: async () => listCheckpoints(checkpointDir),
    close: async () => {
      if (!dead) await call({ op: "close" }).catch(() => {});
      await worker.terminate();
    },
  };
}
