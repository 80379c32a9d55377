/**
 * The optimizer service (docs/algorithm.md §4): `createOptimizerService(config)` for `sppo serve optimizer`, the
 * trainer core for tests and tools, and the checkpoint format.
 */
export { CheckpointError, type CheckpointEntry, listCheckpoints, readCheckpoint, verifyCheckpoint, writeCheckpoint } from "./checkpoint.js";
export { createOptimizerService, type OptimizerServiceConfig, optimizerImplementation } from "./server.js";
export { type IterationParams, resolveParams, Trainer, type TrainerOptions, type VersionFiles } from "./trainer.js";
export { inProcessTrainer, startTrainerWorker, type TrainerApi } from "./trainer-api.js";
