/**
 * The request multiplexer (lib/grpc/multiplexer.ts) that the loop and the remote oracle backend both use: responses
 * out of order, per-request errors, re-send after a broken stream, back-off on RESOURCE_EXHAUSTED, streams spread
 * over two real replicas, stream rotation, the message limit, and the per-request deadline (a request unanswered in
 * time is re-sent on another stream, within the re-send limit; the hung stream is cancelled), the first answer
 * winning, and close/abort. Real gRPC servers on loopback, or in-memory streams where the test drives the timing.
 * Whole runs with a frozen replica process are in test/faults/replica-hang.test.ts.
 * Run: node --import tsx --test test/lib/grpc/multiplexer.test.ts
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { type CompareRequest, CompareRequestSchema, PreferenceOracle } from "../../../gen/sppo/v1/oracle_pb.js";
import { Code, RpcError } from "../../../lib/errors.js";
import { createClient } from "../../../lib/grpc/client.js";
import { createMultiplexer } from "../../../lib/grpc/multiplexer.js";
import { mount, type RunningServer } from "../../../lib/grpc/serve.js";
import { AsyncQueue } from "../../../lib/streams/async-queue.js";
import { deferred, serveForTest } from "./harness.js";

const servers: RunningServer[] = [];
after(async () => Promise.all(servers.map((s) => s.shutdown(0))));

describe("multiplexer over a real bidi stream", () => {
  const matrix2 = (r: CompareRequest) => ({ requestId: r.requestId, k: 2, probabilities: [0.5, 0.5, 0.5, 0.5] });

  it("matches out-of-order responses and turns per-request errors into rejections", async () => {
    const server = await serveForTest([
      mount(PreferenceOracle, {
        async describe() {
          return {};
        },
        async *compare(requests) {
          const held: CompareRequest[] = [];
          for await (const r of requests) {
            if (r.candidates.length < 2) {
              yield { requestId: r.requestId, error: { code: Code.INVALID_ARGUMENT, message: "need at least 2", field: "candidates" } };
              continue;
            }
            held.unshift(r);
            if (held.length === 3) for (const h of held.splice(0)) yield matrix2(h);
          }
        },
      }),
    ]);
    servers.push(server);
    const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
    const mux = createMultiplexer((r, signal) => client.compare(r, { signal }), { name: "oracle" });
    const results = await Promise.allSettled(
      ["a", "b", "bad", "c"].map((id) =>
        mux.request(create(CompareRequestSchema, { requestId: `${id}!`, prompt: "p", candidates: id === "bad" ? ["x"] : ["x", "y"] })),
      ),
    );
    const ok = results.filter((r) => r.status === "fulfilled").map((r) => (r as PromiseFulfilledResult<{ requestId: string }>).value.requestId);
    assert.deepEqual(ok.sort(), ["a!", "b!", "c!"]);
    const failed = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    assert.ok(failed.reason instanceof RpcError);
    assert.equal(failed.reason.code, Code.INVALID_ARGUMENT);
    assert.match(failed.reason.message, /request bad! \(field candidates\): need at least 2/);
    mux.close();
    client.close();
  });

  it("re-sends pending requests on a new stream when the stream breaks", async () => {
    let streams = 0;
    const server = await serveForTest([
      mount(PreferenceOracle, {
        async describe() {
          return {};
        },
        async *compare(requests) {
          streams++;
          const first = streams === 1;
          for await (const r of requests) {
            if (first) throw new RpcError(Code.UNAVAILABLE, "replica going away");
            yield matrix2(r);
          }
        },
      }),
    ]);
    servers.push(server);
    const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
    const mux = createMultiplexer((r, signal) => client.compare(r, { signal }), { name: "oracle" });
    const answers = await Promise.all(["x", "y"].map((id) => mux.request(create(CompareRequestSchema, { requestId: id, candidates: ["a", "b"] }))));
    assert.deepEqual(
      answers.map((a) => a.requestId),
      ["x", "y"],
    );
    assert.equal(streams, 2, "one broken stream, one that answered");
    mux.close();
    client.close();
  });

  it("asks again, with back-off, when the service answers RESOURCE_EXHAUSTED", async () => {
    const refusals = new Map<string, number>();
    const server = await serveForTest([
      mount(PreferenceOracle, {
        async describe() {
          return {};
        },
        async *compare(requests) {
          for await (const r of requests) {
            const seen = refusals.get(r.requestId) ?? 0;
            if (seen < 2) {
              refusals.set(r.requestId, seen + 1);
              yield { requestId: r.requestId, error: { code: Code.RESOURCE_EXHAUSTED, message: "full" } };
            } else yield matrix2(r);
          }
        },
      }),
    ]);
    servers.push(server);
    const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
    const mux = createMultiplexer((r, signal) => client.compare(r, { signal }), { name: "oracle", overloadBackoffMs: 5 });
    const answer = await mux.request(create(CompareRequestSchema, { requestId: "busy", candidates: ["a", "b"] }));
    assert.equal(answer.requestId, "busy");
    assert.equal(answer.error, undefined);
    assert.equal(refusals.get("busy"), 2, "refused twice, answered the third time");
    const quickToGiveUp = createMultiplexer((r, signal) => client.compare(r, { signal }), { name: "oracle", overloadBackoffMs: 1, maxOverloadRetries: 1 });
    await assert.rejects(quickToGiveUp.request(create(CompareRequestSchema, { requestId: "again", candidates: ["a", "b"] })), (err: RpcError) => err.code === Code.RESOURCE_EXHAUSTED);
    mux.close();
    quickToGiveUp.close();
    client.close();
  });
});

describe("multiplexer over two replicas", () => {

  /** An oracle replica that holds every request until `release`, then answers; `seen` counts what it received. */
  function replica(name: string, release: Promise<void>, seen: Map<string, string[]>, described: Set<string>) {
    return mount(PreferenceOracle, {
      async describe() {
        described.add(name);
        return {};
      },
      async *compare(requests) {
        const held: CompareRequest[] = [];
        for await (const r of requests) {
          seen.set(r.requestId, [...(seen.get(r.requestId) ?? []), name]);
          held.push(r);
          if (held.length >= 2) break;
        }
        await release;
        for (const r of held) yield { requestId: r.requestId, k: 2, probabilities: [0.5, 0.5, 0.5, 0.5], truncatedTexts: name === "a" ? 1 : 2 };
      },
    });
  }

  it("spreads its streams over the replicas and re-sends a dead replica's requests on the other, each answered once", async () => {
    let releaseB!: () => void;
    const seen = new Map<string, string[]>();
    const described = new Set<string>();
    const a = await serveForTest([replica("a", new Promise(() => {}), seen, described)]); // never answers: it is killed
    const b = await serveForTest([replica("b", new Promise<void>((r) => (releaseB = r)), seen, described)]);
    servers.push(b);
    const client = createClient(PreferenceOracle, `ipv4:127.0.0.1:${a.port},127.0.0.1:${b.port}`, { maxAttempts: 1 });
    // Until both replicas are connected round_robin uses the ready one only; unary calls alternate once both are.
    while (described.size < 2) await client.describe({});
    const mux = createMultiplexer((r, signal) => client.compare(r, { signal }), { name: "oracle", streams: 2, ready: (ms) => client.waitForReady(ms) });
    try {
      const ids = ["p0", "p1", "p2", "p3"];
      const answers = ids.map((id) => mux.request(create(CompareRequestSchema, { requestId: id, candidates: ["x", "y"] })));
      // Both replicas hold two requests each.
      while ([...seen.values()].length < 4) await new Promise((r) => setTimeout(r, 10));
      const onA = ids.filter((id) => seen.get(id)?.[0] === "a");
      assert.equal(onA.length, 2, `round_robin put one stream on each replica: ${JSON.stringify([...seen])}`);
      await a.shutdown(0); // the replica dies with two requests in flight
      releaseB();
      const responses = await Promise.all(answers);
      assert.deepEqual(responses.map((r) => r.requestId), ids);
      for (const id of onA) assert.deepEqual(seen.get(id), ["a", "b"], `${id} re-sent to b once`);
      for (const r of responses) assert.equal(r.truncatedTexts, 2, "every answer came from the live replica");
    } finally {
      mux.close();
      client.close();
    }
  });
});

describe("multiplexer stream rotation", () => {
  it("retires a stream after requestsPerStream requests; the next request opens a new one and nothing is lost", async () => {
    let opened = 0;
    const open = (requests: AsyncIterable<{ requestId: string }>) =>
      (async function* () {
        opened++;
        for await (const r of requests) yield { requestId: r.requestId };
      })();
    const mux = createMultiplexer(open, { name: "echo", streams: 1, requestsPerStream: 2 });
    const ids = ["r0", "r1", "r2", "r3", "r4"];
    const answers = await Promise.all(ids.map((requestId) => mux.request({ requestId })));
    mux.close();
    assert.deepEqual(answers.map((a) => a.requestId), ids);
    assert.equal(opened, 3, "5 requests at 2 per stream");
  });
});

describe("multiplexer message limit", () => {
  it("refuses a request over the limit as bad input before sending it; the stream goes on with the others", async () => {
    const sent: string[] = [];
    const open = (requests: AsyncIterable<{ requestId: string; body: string }>) =>
      (async function* () {
        for await (const r of requests) {
          sent.push(r.requestId);
          yield { requestId: r.requestId };
        }
      })();
    const mux = createMultiplexer(open, { name: "oracle", sizeOf: (r) => r.body.length, maxMessageBytes: 10 });
    const big = mux.request({ requestId: "big", body: "x".repeat(11) });
    const small = mux.request({ requestId: "small", body: "x".repeat(10) });
    await assert.rejects(big, (err: unknown) => err instanceof RpcError && err.code === Code.INVALID_ARGUMENT && /request big is 11 bytes, over the message limit of 10/.test(err.message));
    assert.equal((await small).requestId, "small");
    mux.close();
    assert.deepEqual(sent, ["small"]);
  });
});

/** An oracle replica that records what reaches it and never answers; `cancelled` resolves when a stream is cancelled. */
function hungReplica(seen: string[], cancelled: { resolve: () => void }) {
  return mount(PreferenceOracle, {
    async describe() {
      return {};
    },
    async *compare(requests, context) {
      context.signal.addEventListener("abort", () => cancelled.resolve(), { once: true });
      for await (const r of requests) seen.push(r.requestId);
      await new Promise(() => {}); // hangs with the connection open, as a frozen process does
    },
  });
}

/** An oracle replica that answers every request at once, marking its answers with truncatedTexts = 7. */
function liveReplica(seen: string[]) {
  return mount(PreferenceOracle, {
    async describe() {
      return {};
    },
    async *compare(requests) {
      for await (const r of requests) {
        seen.push(r.requestId);
        yield { requestId: r.requestId, k: 2, probabilities: [0.5, 0.5, 0.5, 0.5], truncatedTexts: 7 };
      }
    },
  });
}

describe("multiplexer request deadline", () => {
  it("re-sends a request unanswered after requestTimeoutMs on another stream, and cancels the hung stream", async () => {
    const onHung: string[] = [];
    const onLive: string[] = [];
    const cancelled = deferred();
    const hung = await serveForTest([hungReplica(onHung, cancelled)]);
    const live = await serveForTest([liveReplica(onLive)]);
    servers.push(hung, live);
    const hungClient = createClient(PreferenceOracle, `127.0.0.1:${hung.port}`);
    const liveClient = createClient(PreferenceOracle, `127.0.0.1:${live.port}`);
    // The first stream lands on the hung replica, every later one on the live one (as round_robin might place them).
    let opened = 0;
    const mux = createMultiplexer((r: AsyncIterable<CompareRequest>, signal) => (opened++ === 0 ? hungClient : liveClient).compare(r, { signal }), {
      name: "oracle",
      streams: 2,
      requestTimeoutMs: 400,
    });
    try {
      const ids = ["q0", "q1", "q2", "q3"];
      const answers = await Promise.all(ids.map((id) => mux.request(create(CompareRequestSchema, { requestId: id, candidates: ["x", "y"] }))));
      assert.deepEqual(answers.map((a) => [a.requestId, a.truncatedTexts]), ids.map((id) => [id, 7]), "every request answered, by the live replica");
      assert.deepEqual(onHung.sort(), ["q0", "q2"], "slot 0's requests went to the hung replica first");
      assert.deepEqual([...onLive].sort(), ids, "each request reached the live replica once");
      await cancelled.promise; // the hung stream, left with nothing waiting on it, was cancelled
      assert.equal(opened, 2, "the re-sends went to the live stream of the other slot, no new stream was needed");
    } finally {
      mux.close();
      hungClient.close();
      liveClient.close();
    }
  });

  it("a request that no stream answers fails with DEADLINE_EXCEEDED after 3 re-sends, each on a new stream", async () => {
    const seen: string[] = [];
    const server = await serveForTest([hungReplica(seen, { resolve: () => {} })]);
    servers.push(server);
    const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
    let opened = 0;
    const mux = createMultiplexer(
      (r: AsyncIterable<CompareRequest>, signal) => {
        opened++;
        return client.compare(r, { signal });
      },
      { name: "oracle", requestTimeoutMs: 200 },
    );
    try {
      await assert.rejects(mux.request(create(CompareRequestSchema, { requestId: "lost", candidates: ["x", "y"] })), (err: unknown) => {
        assert.ok(err instanceof RpcError && err.code === Code.DEADLINE_EXCEEDED, String(err));
        assert.match(err.message, /^oracle: request lost had no answer within 200 ms, 4 times$/);
        return true;
      });
      assert.deepEqual(seen, ["lost", "lost", "lost", "lost"], "sent once and re-sent 3 times");
      assert.equal(opened, 4, "each send on a new stream");
    } finally {
      mux.close();
      client.close();
    }
  });

  it("the first answer wins: the original's late answer after a re-send, and a repeated answer, are dropped", async () => {
    type Req = { requestId: string };
    type Res = { requestId: string; from: string };
    const streams: { requests: AsyncIterable<Req>; signal: AbortSignal; answers: AsyncQueue<Res> }[] = [];
    const opened = new AsyncQueue<number>();
    const mux = createMultiplexer<Req, Res>(
      (requests, signal) => {
        const answers = new AsyncQueue<Res>();
        streams.push({ requests, signal, answers });
        opened.push(streams.length - 1);
        return answers;
      },
      { name: "echo", requestTimeoutMs: 40 },
    );
    const openedNext = opened[Symbol.asyncIterator]();
    const first = mux.request({ requestId: "a" });
    await openedNext.next(); // stream 0 holds "a" unanswered until it times out
    await openedNext.next(); // "a" re-sent on stream 1
    streams[1].answers.push({ requestId: "a", from: "stream 1" });
    assert.deepEqual(await first, { requestId: "a", from: "stream 1" });
    assert.ok(streams[0].signal.aborted, "stream 0, with nothing left waiting on it, was cancelled");
    // The original's answer arrives late, and stream 1 repeats its answer: both dropped, nothing breaks.
    streams[0].answers.push({ requestId: "a", from: "stream 0" });
    streams[1].answers.push({ requestId: "a", from: "stream 1 again" });
    const second = mux.request({ requestId: "b" });
    streams[1].answers.push({ requestId: "b", from: "stream 1" });
    assert.deepEqual(await second, { requestId: "b", from: "stream 1" });
    mux.abort(new RpcError(Code.CANCELLED, "test over"));
  });
});

describe("multiplexer close and abort", () => {
  it("close() lets the pending requests be answered, then cancels a stream the service never ends", async () => {
    const signals: AbortSignal[] = [];
    const answers = new AsyncQueue<{ requestId: string }>();
    const mux = createMultiplexer(
      (requests: AsyncIterable<{ requestId: string }>, signal) => {
        signals.push(signal);
        void (async () => {
          for await (const r of requests) answers.push({ requestId: r.requestId });
          // The request side ended (half-close) but this "service" never ends its responses.
        })();
        return answers;
      },
      { name: "echo", closeGraceMs: 20 },
    );
    const answer = mux.request({ requestId: "x" });
    mux.close();
    assert.deepEqual(await answer, { requestId: "x" });
    await assert.rejects(mux.request({ requestId: "y" }), (err: unknown) => err instanceof RpcError && err.code === Code.FAILED_PRECONDITION);
    await new Promise<void>((resolve) => (signals[0].aborted ? resolve() : signals[0].addEventListener("abort", () => resolve(), { once: true })));
  });

  it("abort() rejects the pending requests with its reason and cancels the streams", async () => {
    let signal: AbortSignal | undefined;
    const mux = createMultiplexer(
      (_requests: AsyncIterable<{ requestId: string }>, s) => {
        signal = s;
        return new AsyncQueue<{ requestId: string }>();
      },
      { name: "echo" },
    );
    const pending = mux.request({ requestId: "x" });
    mux.abort(new RpcError(Code.UNAVAILABLE, "the oracle is closed"));
    await assert.rejects(pending, (err: unknown) => err instanceof RpcError && err.code === Code.UNAVAILABLE && err.message === "the oracle is closed");
    assert.ok(signal?.aborted);
  });
});
