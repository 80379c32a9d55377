/**
 * The optimizer's trainer in a worker thread (started by trainer-api.ts `startTrainerWorker` through
 * trainer-worker.mjs): initialises the tfjs backend, opens the trainer, says hello, then serves requests one at a
 * time, in order (a step the engine answers asynchronously finishes before the next request starts). Never imported by
 * the main thread.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { parentPort, workerData } from "node:worker_threads";
import { PolicyVersionSchema } from "../../gen/sppo/v1/common_pb.js";
import { TrainRequestSchema } from "../../gen/sppo/v1/optimizer_pb.js";
import { TelemetryEventSchema } from "../../gen/sppo/v1/telemetry_pb.js";
import type { OptimizerConfig } from "../../lib/config/optimizer.js";
import { Code, RpcError } from "../../lib/errors.js";
import { initBackend, type TrainStep } from "../../models/index.js";
import { createTrainEngine } from "./engine.js";
import { Trainer } from "./trainer.js";
import { serialized, type WorkerHello, type WorkerReply, type WorkerRequest, type WorkerView, workerError } from "./trainer-api.js";

const port = parentPort;
if (!port) throw new RpcError(Code.INTERNAL, "trainer-worker.ts runs in a worker thread only");
const { config } = workerData as { config: OptimizerConfig };

let trainer: Trainer;
let engine: TrainStep;
const version = (v: Parameters<typeof toBinary<typeof PolicyVersionSchema>>[1]) => toBinary(PolicyVersionSchema, v);
const view = (): WorkerView => ({
  versions: trainer.publishedVersions().map(({ policy, dir }) => ({ policy: version(policy), dir })),
  checkpointDir: trainer.checkpointDir,
});
try {
  const backend = await initBackend(config.backend);
  engine = createTrainEngine(config, backend);
  trainer = Trainer.open(config, { engine });
  port.postMessage({ ready: true, backend: backend.name, engine: engine.name, iteration: trainer.currentIteration(), step: trainer.steps, view: view() } satisfies WorkerHello);
} catch (err) {
  port.postMessage({ ready: false, error: workerError(err) } satisfies WorkerHello);
  process.exit(1);
}

const serial = serialized();
port.on("message", (msg: WorkerRequest) => serial(() => answer(msg)).then((reply) => port.postMessage(reply)));

async function answer(msg: WorkerRequest): Promise<WorkerReply> {
  let reply: WorkerReply;
  try {
    let value: unknown;
    switch (msg.op) {
      case "handle":
        value = (await trainer.handleAsync(fromBinary(TrainRequestSchema, msg.request))).map((e) => toBinary(TelemetryEventSchema, e));
        break;
      case "saveCheckpoint": {
        const saved = trainer.saveCheckpoint();
        value = { ...saved, policy: version(saved.policy) };
        break;
      }
      case "close":
        trainer.dispose();
        await engine.close();
        value = null;
        break;
    }
    reply = { id: msg.id, value, view: msg.op === "close" ? { versions: [], checkpointDir: config.checkpointDir } : view() };
  } catch (err) {
    reply = { id: msg.id, error: workerError(err), view: view() };
  }
  return reply;
}
