/**
 * sppo.v1.Optimizer on gRPC: mounts the trainer (trainer.ts, run in a worker thread by trainer-api.ts) as the
 * service's handlers. `sppo serve optimizer`
 * (services/index.ts) calls `createOptimizerService(config)` and serves the returned implementation.
 *
 * - Train (bidi): one stream at a time (a second one is ABORTED: two writers of one policy would interleave; one
 *   opened while the previous stream's call is already cancelled waits for that handler to end instead). Each request is handled in order; the telemetry it produced is streamed back as TrainResponses.
 *   With the trainer in a worker thread (the default) the server's event loop stays free while steps run; in this
 *   thread the handler at least yields between requests. A stream that breaks mid-iteration leaves the iteration open: the next Train
 *   stream continues it (trainer.ts, "Resume").
 * - GetWeights: the version's PolicyManifest, then its files in chunks (lib/weights `weightStream`), chunks capped
 *   below the server's message limit.
 * - SaveCheckpoint / ListCheckpoints / ListPolicyVersions: unary views of the trainer.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import type { PolicyVersion } from "../../gen/sppo/v1/common_pb.js";
import { type Checkpoint, CheckpointSchema, type Optimizer, TrainResponseSchema } from "../../gen/sppo/v1/optimizer_pb.js";
import type { OptimizerConfig } from "../../lib/config/optimizer.js";
import { Code, RpcError } from "../../lib/errors.js";
import type { ServiceImplementation } from "../../lib/grpc/implementation.js";
import { log } from "../../lib/log.js";
import { MAX_CHUNK_BYTES, weightStream } from "../../lib/weights/index.js";
import { initBackend } from "../../models/index.js";
import type { CheckpointEntry } from "./checkpoint.js";
import { createTrainEngine } from "./engine.js";
import type { TrainerSnapshot } from "./state.js";
import { Trainer } from "./trainer.js";
import { inProcessTrainer, startTrainerWorker, type TrainerApi } from "./trainer-api.js";
import { versionMessage } from "./versions.js";

/** What the optimizer service needs of the project config (a full `Config` fits). */
export interface OptimizerServiceConfig {
  optimizer: OptimizerConfig;
  /** The server's message limit caps GetWeights chunks. */
  server?: { maxMessageBytes: number };
}

/** Bytes a FileChunk adds around its data (field tags, lengths, offset): generous. */
const CHUNK_OVERHEAD_BYTES = 1024;

/** The latest policy version and the run a checkpoint recorded (read from its trainer.json). */
function checkpointRecord(entry: CheckpointEntry): { policy?: PolicyVersion; runId: string } {
  try {
    const doc = JSON.parse(readFileSync(join(entry.dir, "trainer.json"), "utf8")) as { trainer?: Partial<TrainerSnapshot> };
    const v = doc.trainer?.versions?.at(-1);
    return { policy: v ? versionMessage(v) : undefined, runId: doc.trainer?.run?.runId ?? "" };
  } catch {
    return { runId: "" };
  }
}

function checkpointMessage(entry: CheckpointEntry, record: { policy?: PolicyVersion; runId: string }): Checkpoint {
  return create(CheckpointSchema, { name: entry.name, iteration: entry.iteration, step: BigInt(entry.step), policy: record.policy, sha256: entry.sha256, runId: record.runId });
}

/** Handlers over an open trainer (in this thread or in a worker). */
export function optimizerImplementation(trainer: TrainerApi, config: OptimizerServiceConfig): ServiceImplementation<typeof Optimizer> {
  const maxChunkBytes = Math.min(MAX_CHUNK_BYTES, Math.max(1024, (config.server?.maxMessageBytes ?? 4 << 20) - CHUNK_OVERHEAD_BYTES));
  /** The Train stream being served: its call's signal, and a promise that settles once its handler has ended. */
  let active: { signal: AbortSignal; ended: Promise<void> } | undefined;
  return {
    async *train(requests, context) {
      // A stream whose call is already cancelled (its client went away) is only finishing the request in flight: wait
      // for it rather than refuse, so that the client's re-open goes through as soon as the trainer is free.
      while (active?.signal.aborted) await active.ended;
      // ABORTED (retry later), not FAILED_PRECONDITION: after a dropped connection the server may not have noticed yet
      // (until its keepalive timeout) when the client reconnects.
      if (active) throw new RpcError(Code.ABORTED, "another Train stream is active: the optimizer trains one stream at a time");
      let end = () => {};
      active = { signal: context.signal, ended: new Promise<void>((resolve) => (end = resolve)) };
      const mine = active;
      try {
        for await (const request of requests) {
          if (context.signal.aborted) break;
          for (const event of await trainer.handle(request)) yield create(TrainResponseSchema, { event });
          // Let health checks, GetWeights and the client's writes through between requests.
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
      } finally {
        if (active === mine) active = undefined;
        end();
      }
    },

    async *getWeights(request, context) {
      const { policy, dir, files } = await trainer.versionFiles(request.version);
      yield* weightStream(
        dir,
        { version: policy.version, iteration: policy.iteration, sha256: policy.sha256, family: policy.family, parameters: policy.parameters },
        { chunkBytes: request.chunkBytes, maxChunkBytes, files, signal: context.signal },
      );
    },

    async saveCheckpoint() {
      const saved = await trainer.saveCheckpoint();
      return { checkpoint: checkpointMessage(saved, saved) };
    },

    async listCheckpoints() {
      return { checkpoints: (await trainer.listCheckpoints()).map((entry) => checkpointMessage(entry, checkpointRecord(entry))) };
    },

    async listPolicyVersions() {
      return { versions: await trainer.listVersions() };
    },
  };
}

/**
 * Opens the trainer — in a worker thread when `optimizer.trainInWorker` (the default), else in this thread —
 * after initialising the tfjs backend there (`optimizer.backend`), resuming from the newest valid checkpoint when
 * `optimizer.resume`; returns the service's handlers. `trainer` is the in-thread Trainer (reading it when the
 * trainer runs in a worker throws FAILED_PRECONDITION); `close()` frees the model and ends the worker.
 */
export async function createOptimizerService(
  config: OptimizerServiceConfig,
): Promise<{ implementation: ServiceImplementation<typeof Optimizer>; readonly trainer: Trainer; close(): Promise<void> }> {
  if (config.optimizer.trainInWorker) {
    const worker = await startTrainerWorker(config.optimizer);
    log.info({ backend: worker.backend, engine: worker.engine, iteration: worker.iteration, step: worker.step, thread: "worker" }, "optimizer ready");
    return {
      implementation: optimizerImplementation(worker, config),
      get trainer(): Trainer {
        throw new RpcError(Code.FAILED_PRECONDITION, "the trainer runs in a worker thread (optimizer.trainInWorker): use the service's RPCs");
      },
      close: () => worker.close(),
    };
  }
  const backend = await initBackend(config.optimizer.backend);
  const engine = createTrainEngine(config.optimizer, backend);
  const trainer = Trainer.open(config.optimizer, { engine });
  log.info({ backend: backend.name, skipped: backend.skipped, engine: engine.name, iteration: trainer.currentIteration(), step: trainer.steps, thread: "main" }, "optimizer ready");
  const api = inProcessTrainer(trainer);
  return {
    implementation: optimizerImplementation(api, config),
    trainer,
    close: async () => {
      await api.close();
      await engine.close();
    },
  };
}
