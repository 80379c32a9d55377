// The oracle's ONNX session, in a worker thread.
//
// onnxruntime-node's `session.run` executes synchronously on the calling thread (its promise only defers the call
// with setImmediate), so a model run on the main thread blocks the event loop: no gRPC I/O, no tokenizing of the
// next requests, no health checks for as long as the run takes. Running the session here keeps the main thread free,
// so request handling overlaps the model runs. Plain JavaScript on purpose: a worker starts without the tsx loader.
//
// Protocol (messages from services/oracle/worker-session.ts):
//   { type: "load", path, options }  →  { type: "loaded", inputNames, outputNames, inputMetadata, outputMetadata }
//   { type: "run", id, feeds: { name: { data, dims } }, output }  →  { type: "result", id, data, dims }
//   failures  →  { type: "error", id?, message }
import { parentPort } from "node:worker_threads";
import * as ort from "onnxruntime-node";

/** @type {ort.InferenceSession | undefined} */
let session;

/** Plain copies of onnxruntime's metadata (its objects do not survive structured cloning). */
const plainMetadata = (list) =>
  list.map((m) => (m.isTensor ? { name: m.name, isTensor: true, type: m.type, shape: [...m.shape] } : { name: m.name, isTensor: false }));

parentPort.on("message", async (message) => {
  if (message.type === "load") {
    try {
      session = await ort.InferenceSession.create(message.path, message.options);
      parentPort.postMessage({
        type: "loaded",
        inputNames: [...session.inputNames],
        outputNames: [...session.outputNames],
        inputMetadata: plainMetadata(session.inputMetadata),
        outputMetadata: plainMetadata(session.outputMetadata),
      });
    } catch (err) {
      parentPort.postMessage({ type: "error", message: String(err?.message ?? err) });
    }
    return;
  }
  if (message.type === "run") {
    if (!session) {
      parentPort.postMessage({ type: "error", id: message.id, message: "no session is loaded" });
      return;
    }
    try {
      const feeds = {};
      for (const [name, { data, dims }] of Object.entries(message.feeds)) feeds[name] = new ort.Tensor("int64", data, dims);
      const result = (await session.run(feeds, [message.output]))[message.output];
      const data = result.data;
      parentPort.postMessage({ type: "result", id: message.id, data, dims: [...result.dims] }, [data.buffer]);
    } catch (err) {
      parentPort.postMessage({ type: "error", id: message.id, message: String(err?.message ?? err) });
    }
    return;
  }
  if (message.type === "release") {
    await session?.release();
    session = undefined;
    parentPort.postMessage({ type: "released" });
  }
});
