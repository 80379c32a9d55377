/**
 * Many concurrent clients against one generator with a small queue: every request is answered exactly once —
 * candidates or RESOURCE_EXHAUSTED — memory stays bounded, and the service keeps serving.
 * Run: node --import tsx --test test/services/generator/load.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Generator, type GenerateResponse } from "../../../gen/sppo/v1/generator_pb.js";
import { generatorConfigSchema } from "../../../lib/config/generator.js";
import { Code } from "../../../lib/errors.js";
import { createClient } from "../../../lib/grpc/client.js";
import { mount } from "../../../lib/grpc/serve.js";
import { log } from "../../../lib/log.js";
import { createGeneratorService } from "../../../services/generator/server.js";
import { serveForTest } from "../../lib/grpc/harness.js";
import { writeTinyPolicy } from "./fixtures.js";

let root: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), "sppo-generator-load-"));
  writeTinyPolicy(join(root, "policy"), 2);
});
after(() => rmSync(root, { recursive: true, force: true }));

const CLIENTS = 16;
const PER_CLIENT = 25;
const IN_FLIGHT_PER_STREAM = 8;

/** Runs the load and returns what happened; asserts what holds in every configuration. */
async function load(maxQueuedRequests: number) {
  const service = await createGeneratorService({
    generator: generatorConfigSchema.parse({
      modelDir: join(root, "policy"),
      engine: "auto",
      tfjsBackend: "cpu",
      maxQueuedRequests,
      maxInFlightPerStream: IN_FLIGHT_PER_STREAM,
    }),
  });
  const server = await serveForTest([mount(Generator, service.implementation)]);
  const target = `127.0.0.1:${server.port}`;
  const rssBefore = process.memoryUsage().rss;
  let rssPeak = rssBefore;
  const sampler = setInterval(() => {
    rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  }, 20);
  const started = performance.now();
  try {
    const perClient = await Promise.all(
      Array.from({ length: CLIENTS }, async (_, c) => {
        // Each client its own channel, as separate processes would have.
        const client = createClient(Generator, target, { channelOptions: { "grpc.use_local_subchannel_pool": 1 } });
        try {
          const responses: GenerateResponse[] = [];
          const requests = Array.from({ length: PER_CLIENT }, (_, i) => ({
            requestId: `${c}/${i}`,
            prompt: "tell me about the cat",
            numSamples: 4,
            params: { maxNewTokens: 8, ...(i % 2 ? { seed: BigInt(i) } : {}) },
          }));
          for await (const r of client.generate(requests)) responses.push(r);
          return responses;
        } finally {
          client.close();
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const all = perClient.flat();
    assert.equal(all.length, CLIENTS * PER_CLIENT);
    assert.equal(new Set(all.map((r) => r.requestId)).size, CLIENTS * PER_CLIENT, "a request answered twice");
    const refused = all.filter((r) => r.error);
    for (const r of refused) assert.equal(r.error?.code, Code.RESOURCE_EXHAUSTED, r.error?.message);
    const served = all.filter((r) => !r.error);
    for (const r of served) assert.equal(r.candidates.length, 4);
    assert.equal(service.generator.queued, 0);
    const rssGrowthMiB = (rssPeak - rssBefore) / 2 ** 20;
    const figures = { maxQueuedRequests, clients: CLIENTS, requests: all.length, served: served.length, refused: refused.length, seconds, servedPerSecond: served.length / seconds, rssGrowthMiB, engine: served[0]?.engine };
    log.info(figures, "generator load test");
    // Bounded: a few hundred small requests must not grow the process by more than a generous 256 MiB.
    assert.ok(rssGrowthMiB < 256, `rss grew by ${rssGrowthMiB.toFixed(0)} MiB`);
    return figures;
  } finally {
    clearInterval(sampler);
    await server.shutdown();
    await service.close();
  }
}

test(`${CLIENTS} clients × ${PER_CLIENT} requests against a queue of 8: refusals, each request answered once, memory bounded`, { timeout: 120_000 }, async () => {
  const figures = await load(8);
  assert.ok(figures.refused > 0, "a queue of 8 under 16 eager clients must refuse some requests");
  assert.ok(figures.served > 0);
});

test("with a queue as deep as clients × maxInFlightPerStream, backpressure alone holds the load: nothing is refused", { timeout: 120_000 }, async () => {
  const figures = await load(CLIENTS * IN_FLIGHT_PER_STREAM);
  assert.equal(figures.refused, 0);
  assert.equal(figures.served, CLIENTS * PER_CLIENT);
});
