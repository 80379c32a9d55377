// Worker-thread entry of models/onnx's WorkerPolicy (worker-policy.ts): registers tsx in this thread, then loads the
// TypeScript worker. Plain JavaScript because nothing can load TypeScript before this runs.
import { register } from "tsx/esm/api";

register();
await import("./policy-worker.ts");
