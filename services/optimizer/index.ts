/**
 * The optimizer service (docs/algorithm.md §4): `createOptimizerService(config)` for `sppo serve optimizer`, the
 * trainer core for tests and tools, and the checkpoint format.
 */
export { type CheckpointEntry, listCheckpoints, readCheckpoint, verifyCheckpoint, writeCheckpoint } from "./checkpoint.js";
export { type IterationParams, resolveParams } from "./params.js";
export { createOptimizerService, type OptimizerServiceConfig, optimizerImplementation } from "./server.js";
export { Trainer, type TrainerOptions } from "./trainer.js";
export { inProcessTrainer, startTrainerWorker, type TrainerApi } from "./trainer-api.js";
export type { VersionFiles } from "./versions.js";
