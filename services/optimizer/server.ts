/**
 * sppo.v1.Optimizer on gRPC: mounts the trainer (trainer.ts) as the service's handlers. `sppo serve optimizer`
 * (services/index.ts) calls `createOptimizerService(config)` and serves the returned implementation.
 *
 * - Train (bidi): one stream at a time (a second one is FAILED_PRECONDITION: two writers of one policy would
 *   interleave). Each request is handled in order; the telemetry it produced is streamed back as TrainResponses.
 *   Between requests the handler yields to the event loop so that health checks and GetWeights keep being served
 *   while a long iteration trains. A stream that breaks mid-iteration leaves the iteration open: the next Train
 *   stream continues it (trainer.ts, "Resume").
 * - GetWeights: the version's PolicyManifest, then its files in chunks (lib/weights `weightStream`), chunks capped
 *   below the server's message limit.
 * - SaveCheckpoint / ListCheckpoints / ListPolicyVersions: unary views of the trainer.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { type PolicyVersion, PolicyVersionSchema } from "../../gen/sppo/v1/common_pb.js";
import { type Checkpoint, CheckpointSchema, type Optimizer, TrainResponseSchema } from "../../gen/sppo/v1/optimizer_pb.js";
import type { OptimizerConfig } from "../../lib/config/optimizer.js";
import { Code, RpcError } from "../../lib/errors.js";
import type { ServiceImplementation } from "../../lib/grpc/implementation.js";
import { log } from "../../lib/log.js";
import { MAX_CHUNK_BYTES, weightStream } from "../../lib/weights/index.js";
import { initBackend } from "../../models/index.js";
import type { CheckpointEntry } from "./checkpoint.js";
import { Trainer, type TrainerOptions } from "./trainer.js";

/** What the optimizer service needs of the project config (a full `Config` fits). */
export interface OptimizerServiceConfig {
  optimizer: OptimizerConfig;
  /** The server's message limit caps GetWeights chunks. */
  server?: { maxMessageBytes: number };
}

/** Bytes a FileChunk adds around its data (field tags, lengths, offset): generous. */
const CHUNK_OVERHEAD_BYTES = 1024;

/** The latest policy version a checkpoint recorded (read from its trainer.json). */
function checkpointPolicy(entry: CheckpointEntry): PolicyVersion | undefined {
  try {
    const doc = JSON.parse(readFileSync(join(entry.dir, "trainer.json"), "utf8")) as {
      trainer?: { versions?: { version: number; iteration: number; sha256: string; family: string; parameters: string }[] };
    };
    const v = doc.trainer?.versions?.at(-1);
    return v ? create(PolicyVersionSchema, { version: v.version, iteration: v.iteration, sha256: v.sha256, family: v.family, parameters: BigInt(v.parameters) }) : undefined;
  } catch {
    return undefined;
  }
}

function checkpointMessage(entry: CheckpointEntry, policy: PolicyVersion | undefined): Checkpoint {
  return create(CheckpointSchema, { name: entry.name, iteration: entry.iteration, step: BigInt(entry.step), policy, sha256: entry.sha256 });
}

/** Handlers over an open trainer. */
export function optimizerImplementation(trainer: Trainer, config: OptimizerServiceConfig): ServiceImplementation<typeof Optimizer> {
  const maxChunkBytes = Math.min(MAX_CHUNK_BYTES, Math.max(1024, (config.server?.maxMessageBytes ?? 4 << 20) - CHUNK_OVERHEAD_BYTES));
  let training = false;
  return {
    async *train(requests, context) {
      if (training) throw new RpcError(Code.FAILED_PRECONDITION, "another Train stream is active: the optimizer trains one stream at a time");
      training = true;
      try {
        for await (const request of requests) {
          if (context.signal.aborted) break;
          for (const event of trainer.handle(request)) yield create(TrainResponseSchema, { event });
          // Let health checks, GetWeights and the client's writes through between requests.
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
      } finally {
        training = false;
      }
    },

    async *getWeights(request, context) {
      const { policy, dir, files } = trainer.versionFiles(request.version);
      yield* weightStream(
        dir,
        { version: policy.version, iteration: policy.iteration, sha256: policy.sha256, family: policy.family, parameters: policy.parameters },
        { chunkBytes: request.chunkBytes, maxChunkBytes, files, signal: context.signal },
      );
    },

    async saveCheckpoint() {
      const saved = trainer.saveCheckpoint();
      return { checkpoint: checkpointMessage(saved, saved.policy) };
    },

    async listCheckpoints() {
      return { checkpoints: trainer.listCheckpoints().map((entry) => checkpointMessage(entry, checkpointPolicy(entry))) };
    },

    async listPolicyVersions() {
      return { versions: trainer.listVersions() };
    },
  };
}

/**
 * Initialises the tfjs backend (`optimizer.backend`), opens the trainer (resuming from the newest valid checkpoint
 * when `optimizer.resume`) and returns the service's handlers; `close()` frees the model.
 */
export async function createOptimizerService(
  config: OptimizerServiceConfig,
  options: TrainerOptions = {},
): Promise<{ implementation: ServiceImplementation<typeof Optimizer>; trainer: Trainer; close(): Promise<void> }> {
  const backend = await initBackend(config.optimizer.backend);
  const trainer = Trainer.open(config.optimizer, options);
  log.info({ backend: backend.name, skipped: backend.skipped, iteration: trainer.currentIteration(), step: trainer.steps, versions: trainer.listVersions().length }, "optimizer ready");
  return {
    implementation: optimizerImplementation(trainer, config),
    trainer,
    close: async () => trainer.dispose(),
  };
}
