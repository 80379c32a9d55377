// Worker-thread entry of the optimizer's trainer (trainer-api.ts `startTrainerWorker`): registers tsx in this thread,
// then loads the TypeScript worker. Plain JavaScript because nothing can load TypeScript before this runs.
import { register } from "tsx/esm/api";

register();
await import("./trainer-worker.ts");
