/**
 * Sync at scale, the "sync" row of bench/scale.ts, in a process of its own: a GPT-2 of the shape in MODEL.json is
 * held by tfjs as the optimizer holds its policy; then, timed,
 *   1. publish: the optimizer's own PolicyVersions.publish (saveModel into an atomically written v1/, its SHA-256);
 *   2. LoadPolicy on a real generator service over gRPC on loopback: the generator pulls v1 from an Optimizer
 *      GetWeights server (lib/weights' weightStream, the optimizer service's handler), verifies it and rebuilds its
 *      onnxruntime sessions (sampling and scoring) on it.
 * Prints one JSON line: publish_ms, load_policy_ms (the call's wall time), the generator's own load_seconds,
 * total_ms, bytes pulled, peak RSS.
 *
 *   node --import tsx bench/scale/sync.ts --model FILE [--threads N]
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Generator } from "../../gen/sppo/v1/generator_pb.js";
import { Optimizer } from "../../gen/sppo/v1/optimizer_pb.js";
import { generatorConfigSchema } from "../../lib/config/generator.js";
import { serverConfigSchema } from "../../lib/config/server.js";
import { createClient } from "../../lib/grpc/client.js";
import { mount, serve } from "../../lib/grpc/serve.js";
import { unimplemented } from "../../lib/grpc/unimplemented.js";
import { weightStream } from "../../lib/weights/index.js";
import { initBackend, loadModel } from "../../models/index.js";
import { createGeneratorService } from "../../services/generator/server.js";
import { describeVersion, PolicyVersions } from "../../services/optimizer/versions.js";
import type { Reference } from "../torch.js";
import { referenceConfig, writeRandomModelDir } from "./model-dir.js";

const { values } = parseArgs({ options: { model: { type: "string" }, threads: { type: "string", default: "2" } } });
const ref = JSON.parse(readFileSync(values.model as string, "utf8")) as Reference;
const base = writeRandomModelDir(referenceConfig(ref), 0);
const work = mkdtempSync(join(base, "..", "sppo-bench-sync-"));
const quietServer = serverConfigSchema.parse({ host: "127.0.0.1", port: 0, metricsPort: -1, drainDelayMs: 0, shutdownGraceMs: 2_000 });
try {
  await initBackend("wasm");
  const { model } = loadModel(base); // the optimizer's policy
  const versions = new PolicyVersions(join(work, "policies"), [describeVersion(base, 0, 0, model)]);

  let t = performance.now();
  const record = versions.publish(1, model, undefined, { runId: "", fingerprint: "" });
  const publishMs = performance.now() - t;
  model.dispose();

  const optimizer = await serve({
    name: "optimizer",
    config: { ...quietServer, port: 0 },
    services: [
      mount(Optimizer, {
        ...unimplemented(Optimizer, "only GetWeights in this benchmark"),
        async *getWeights(request, context) {
          const { policy, dir, files } = versions.files(request.version); // NOT_FOUND for an unknown version
          yield* weightStream(dir, { ...policy }, { chunkBytes: request.chunkBytes, signal: context.signal, files });
        },
      }),
    ],
  });
  const target = `127.0.0.1:${optimizer.port}`;
  const onnx = { intraOpThreads: Number(values.threads), graphOptimizationLevel: "all" as const, executionProviders: ["cpu" as const], allowSpinning: false, dtype: "float32" as const, prepackWeights: true, weightsDir: "" };
  const service = await createGeneratorService({
    generator: generatorConfigSchema.parse({ modelDir: base, engine: "onnx", weightsDir: join(work, "generator"), optimizerTarget: target }),
    engine: { onnx },
  });
  const generator = await serve({ name: "generator", config: { ...quietServer, port: 0 }, services: [mount(Generator, service.implementation)] });
  const client = createClient(Generator, `127.0.0.1:${generator.port}`, { deadlineMs: 600_000 });

  t = performance.now();
  const loaded = await client.loadPolicy({ version: 1, source: target, sha256: record.sha256 });
  const loadMs = performance.now() - t;

  client.close();
  await generator.shutdown();
  await service.close();
  await optimizer.shutdown();
  process.stdout.write(
    `${JSON.stringify({
      publish_ms: Math.round(publishMs),
      load_policy_ms: Math.round(loadMs),
      generator_load_seconds: +loaded.loadSeconds.toFixed(2),
      total_ms: Math.round(publishMs + loadMs),
      version: loaded.policy?.version,
      params: Number(loaded.policy?.parameters ?? 0),
      peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    })}\n`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
  rmSync(base, { recursive: true, force: true });
}
