/**
 * The gRPC layer with real servers on loopback: every streaming shape the contracts use (unary, server streaming,
 * bidi), deadlines, retry of UNAVAILABLE through the service config, message-size limits, health during shutdown,
 * graceful shutdown, cancellation, and reflection.
 * Run: node --import tsx --test test/lib/grpc/serve.test.ts
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { type CompareRequest, PreferenceOracle } from "../../../gen/sppo/v1/oracle_pb.js";
import { Optimizer } from "../../../gen/sppo/v1/optimizer_pb.js";
import { Code, RpcError } from "../../../lib/errors.js";
import { createClient } from "../../../lib/grpc/client.js";
import type { ServiceImplementation } from "../../../lib/grpc/implementation.js";
import { mount, type RunningServer } from "../../../lib/grpc/serve.js";
import { unimplemented } from "../../../lib/grpc/unimplemented.js";
import { deferred, serveForTest } from "./harness.js";

/** A test oracle: P_ij = 1 when candidate i is longer than j, ½ on ties. Answers in reverse arrival order per pair of requests. */
function lengthOracle(overrides: Partial<ServiceImplementation<typeof PreferenceOracle>> = {}): ServiceImplementation<typeof PreferenceOracle> {
  return {
    async describe() {
      return { backend: "test-length", model: "longer wins", maxCandidates: 8, pairwise: true };
    },
    async *compare(requests) {
      const held: CompareRequest[] = [];
      for await (const request of requests) {
        held.push(request);
        if (held.length === 2) {
          for (const r of held.reverse()) yield matrixOf(r);
          held.length = 0;
        }
      }
      for (const r of held) yield matrixOf(r);
    },
    ...overrides,
  };
}

function matrixOf(request: CompareRequest) {
  const c = request.candidates;
  const probabilities = c.flatMap((a) => c.map((b) => (a.length > b.length ? 1 : a.length < b.length ? 0 : 0.5)));
  return { requestId: request.requestId, k: c.length, probabilities };
}

const servers: RunningServer[] = [];
async function start(...args: Parameters<typeof serveForTest>) {
  const server = await serveForTest(...args);
  servers.push(server);
  return server;
}
after(async () => {
  await Promise.all(servers.map((s) => s.shutdown(0)));
});

describe("lib/grpc", () => {
  it("serves and calls a unary method", async () => {
    const server = await start([mount(PreferenceOracle, lengthOracle())]);
    const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
    const response = await client.describe({});
    assert.equal(response.backend, "test-length");
    assert.equal(response.maxCandidates, 8);
    client.close();
  });

  it("streams both ways (bidi) and matches responses by request id in any order", async () => {
    const server = await start([mount(PreferenceOracle, lengthOracle())]);
    const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
    const requests = [
      { requestId: "a", prompt: "p", candidates: ["x", "xyz"] },
      { requestId: "b", prompt: "p", candidates: ["long one", "s", "mid"] },
      { requestId: "c", prompt: "p", candidates: ["same", "same"] },
    ];
    const seen: string[] = [];
    const byId = new Map<string, number[]>();
    for await (const response of client.compare(requests)) {
      seen.push(response.requestId);
      byId.set(response.requestId, response.probabilities);
    }
    assert.deepEqual(seen, ["b", "a", "c"], "the test server answers each pair in reverse order");
    assert.deepEqual(byId.get("a"), [0.5, 0, 1, 0.5]);
    assert.deepEqual(byId.get("b"), [0.5, 1, 1, 0, 0.5, 0, 0, 1, 0.5]);
    assert.deepEqual(byId.get("c"), [0.5, 0.5, 0.5, 0.5]);
    client.close();
  });

  it("streams a server-side stream of many messages with backpressure", async () => {
    const chunks = 2_000;
    const chunkBytes = 16 * 1024;
    const implementation = {
      ...unimplemented(Optimizer, "only GetWeights is under test"),
      async *getWeights(request: { version: number }) {
        yield { kind: { case: "manifest" as const, value: { policy: { version: request.version }, files: [{ name: "w.bin", sizeBytes: BigInt(chunks * chunkBytes) }] } } };
        for (let i = 0; i < chunks; i++) {
          yield { kind: { case: "chunk" as const, value: { fileIndex: 0, offset: BigInt(i * chunkBytes), data: new Uint8Array(chunkBytes).fill(i % 251) } } };
        }
      },
    };
    const server = await start([mount(Optimizer, implementation)]);
    const client = createClient(Optimizer, `127.0.0.1:${server.port}`);
    let bytes = 0;
    let count = 0;
    let version = -1;
    for await (const response of client.getWeights({ version: 7 })) {
      if (response.kind.case === "manifest") version = response.kind.value.policy?.version ?? -1;
      else if (response.kind.case === "chunk") {
        assert.equal(response.kind.value.data[0], count % 251, `chunk ${count} content`);
        assert.equal(response.kind.value.offset, BigInt(count * chunkBytes));
        bytes += response.kind.value.data.length;
        count++;
      }
    }
    assert.equal(version, 7);
    assert.equal(count, chunks);
    assert.equal(bytes, chunks * chunkBytes);
    client.close();
  });

  it("ends a call at its deadline with DEADLINE_EXCEEDED and aborts the handler's signal", async () => {
    const aborted = deferred<boolean>();
    const server = await start([
      mount(
        PreferenceOracle,
        lengthOracle({
          async describe(_request, context) {
            await new Promise<void>((resolve) => context.signal.addEventListener("abort", () => resolve(), { once: true }));
            aborted.resolve(true);
            return { backend: "late" };
          },
        }),
      ),
    ]);
    const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
    await assert.rejects(client.describe({}, { deadlineMs: 150 }), (err: RpcError) => {
      assert.equal(err.code, Code.DEADLINE_EXCEEDED);
      assert.match(err.message, /\/sppo\.v1\.PreferenceOracle\/Describe/);
      return true;
    });
    assert.equal(await aborted.promise, true);
    client.close();
  });

  /** A length oracle whose Describe counts its calls and runs `answer` with the call's number (from 1), and a client of it. */
  async function countingDescribe(answer: (attempt: number) => { backend: string; maxCandidates: number }, options: Parameters<typeof createClient>[2]) {
    let attempts = 0;
    const server = await start([
      mount(
        PreferenceOracle,
        lengthOracle({
          async describe() {
            attempts++;
            return answer(attempts);
          },
        }),
      ),
    ]);
    const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`, options);
    return { client, attempts: () => attempts };
  }

  it("retries UNAVAILABLE through the service config and succeeds", async () => {
    const { client, attempts } = await countingDescribe(
      (attempt) => {
        if (attempt < 3) throw new RpcError(Code.UNAVAILABLE, "warming up");
        return { backend: "ready", maxCandidates: attempt };
      },
      { initialBackoffMs: 10, maxBackoffMs: 50 },
    );
    const response = await client.describe({});
    assert.equal(response.backend, "ready");
    assert.equal(attempts(), 3);
    client.close();
  });

  for (const { name, code, message, pattern, options } of [
    { name: "makes no retries with maxAttempts 1", code: Code.UNAVAILABLE, message: "down", pattern: undefined, options: { maxAttempts: 1 } },
    { name: "does not retry other codes", code: Code.INVALID_ARGUMENT, message: "candidates: need at least 2", pattern: /need at least 2/, options: { initialBackoffMs: 10 } },
  ]) {
    it(name, async () => {
      const { client, attempts } = await countingDescribe(() => {
        throw new RpcError(code, message);
      }, options);
      await assert.rejects(client.describe({}), (err: RpcError) => err.code === code && (pattern === undefined || pattern.test(err.message)));
      assert.equal(attempts(), 1);
      client.close();
    });
  }

  it("refuses a message over the size limit with a clear RESOURCE_EXHAUSTED, and keeps serving", async () => {
    const server = await start([mount(PreferenceOracle, lengthOracle())], { maxMessageBytes: 1024 });
    const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
    const big = [{ requestId: "big", prompt: "p", candidates: ["x".repeat(4096), "y"] }];
    await assert.rejects(
      (async () => {
        for await (const _ of client.compare(big)) {
          // no response expected
        }
      })(),
      (err: RpcError) => {
        assert.equal(err.code, Code.RESOURCE_EXHAUSTED);
        assert.match(err.message, /Compare.*larger than max/);
        return true;
      },
    );
    const small = [{ requestId: "s", prompt: "p", candidates: ["ab", "a"] }];
    const answers = [];
    for await (const r of client.compare(small)) answers.push(r.requestId);
    assert.deepEqual(answers, ["s"]);
    client.close();
  });

  it("reports a stream's failure even when the caller starts reading after it happened", async () => {
    const server = await start([
      mount(Optimizer, {
        ...unimplemented(Optimizer, "only GetWeights is under test"),
        // biome-ignore lint/correctness/useYield: fails before its first message
        async *getWeights() {
          throw new RpcError(Code.NOT_FOUND, "version 9: no such policy version");
        },
      }),
    ]);
    const client = createClient(Optimizer, `127.0.0.1:${server.port}`);
    const stream = client.getWeights({ version: 9 });
    await new Promise((resolve) => setTimeout(resolve, 300)); // the status arrives before anyone reads
    await assert.rejects(
      (async () => {
        for await (const _ of stream) {
          // none
        }
      })(),
      (err: RpcError) => err.code === Code.NOT_FOUND && /GetWeights: version 9: no such policy version/.test(err.message),
    );
    client.close();
  });

  it("answers UNIMPLEMENTED with the reason for work that has not landed", async () => {
    const server = await start([mount(Optimizer, unimplemented(Optimizer, "lands with issue 5"))]);
    const client = createClient(Optimizer, `127.0.0.1:${server.port}`);
    await assert.rejects(client.listCheckpoints({}), (err: RpcError) => err.code === Code.UNIMPLEMENTED && /issue 5/.test(err.message));
    await assert.rejects(
      (async () => {
        for await (const _ of client.getWeights({ version: 1 })) {
          // none
        }
      })(),
      (err: RpcError) => err.code === Code.UNIMPLEMENTED,
    );
    client.close();
  });

  it("reports NOT_SERVING while draining, finishes in-flight streams, then stops", async () => {
    const release = deferred();
    const entered = deferred();
    const server = await start(
      [
        mount(
          PreferenceOracle,
          lengthOracle({
            async *compare(requests) {
              for await (const request of requests) {
                entered.resolve();
                await release.promise;
                yield matrixOf(request);
              }
            },
          }),
        ),
      ],
      { drainDelayMs: 400, shutdownGraceMs: 5_000 },
    );
    const target = `127.0.0.1:${server.port}`;
    const health = healthClient(target);
    assert.equal(await check(health, ""), "SERVING");
    assert.equal(await check(health, "sppo.v1.PreferenceOracle"), "SERVING");

    const client = createClient(PreferenceOracle, target);
    const results = (async () => {
      const ids: string[] = [];
      for await (const r of client.compare([{ requestId: "inflight", prompt: "p", candidates: ["a", "bb"] }])) ids.push(r.requestId);
      return ids;
    })();
    await entered.promise;
    const stopped = server.shutdown();
    assert.equal(server.state(), "draining");
    assert.equal(await check(health, "sppo.v1.PreferenceOracle"), "NOT_SERVING");
    assert.equal(await check(health, ""), "NOT_SERVING");
    release.resolve();
    assert.deepEqual(await results, ["inflight"], "the in-flight stream finished");
    await stopped;
    assert.equal(server.state(), "stopped");
    health.close();
    client.close();
  });

  it("cancels calls still running when the grace period is over", async () => {
    const cancelled = deferred<boolean>();
    const entered = deferred();
    const server = await start(
      [
        mount(
          PreferenceOracle,
          lengthOracle({
            async *compare(_requests, context) {
              entered.resolve();
              await new Promise<void>((resolve) => context.signal.addEventListener("abort", () => resolve(), { once: true }));
              cancelled.resolve(true);
            },
          }),
        ),
      ],
      { shutdownGraceMs: 200 },
    );
    const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
    const never = (async function* () {
      yield { requestId: "x", prompt: "p", candidates: ["a", "b"] };
      await new Promise(() => {});
    })();
    const consumer = (async () => {
      for await (const _ of client.compare(never)) {
        // none
      }
    })();
    await entered.promise;
    await server.shutdown();
    assert.equal(await cancelled.promise, true);
    await assert.rejects(consumer, (err: RpcError) => err instanceof RpcError);
    client.close();
  });

  it("lists the services by reflection", async () => {
    const server = await start([mount(PreferenceOracle, lengthOracle()), mount(Optimizer, unimplemented(Optimizer, "n/a"))]);
    const names = await reflectionList(`127.0.0.1:${server.port}`);
    assert.deepEqual(names.sort(), ["grpc.health.v1.Health", "sppo.v1.Optimizer", "sppo.v1.PreferenceOracle"]);
  });
});

type HealthClient = grpc.Client & { check: (req: { service: string }, cb: (err: grpc.ServiceError | null, res: { status: string }) => void) => void };

function healthClient(target: string): HealthClient {
  const definition = loadSync(healthProtoPath, { enums: String });
  const Health = grpc.loadPackageDefinition(definition).grpc as unknown as {
    health: { v1: { Health: new (t: string, c: grpc.ChannelCredentials) => HealthClient } };
  };
  return new Health.health.v1.Health(target, grpc.credentials.createInsecure());
}

function check(client: HealthClient, service: string): Promise<string> {
  return new Promise((resolve, reject) => client.check({ service }, (err, res) => (err ? reject(err) : resolve(res.status))));
}

/** Lists services with grpc.reflection.v1 from a client built from the reflection .proto (not our code). */
async function reflectionList(target: string): Promise<string[]> {
  const protoPath = new URL("../../../node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto", import.meta.url).pathname;
  const pkg = grpc.loadPackageDefinition(loadSync(protoPath)) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: new (t: string, c: grpc.ChannelCredentials) => grpc.Client & { serverReflectionInfo(): grpc.ClientDuplexStream<unknown, { listServicesResponse?: { service: { name: string }[] } }> } } } };
  };
  const client = new pkg.grpc.reflection.v1.ServerReflection(target, grpc.credentials.createInsecure());
  const call = client.serverReflectionInfo();
  const names = new Promise<string[]>((resolve, reject) => {
    call.on("data", (response: { listServicesResponse?: { service: { name: string }[] } }) =>
      resolve((response.listServicesResponse?.service ?? []).map((s) => s.name)),
    );
    call.on("error", reject);
  });
  call.write({ listServices: "" });
  call.end();
  const result = await names;
  client.close();
  return result;
}
