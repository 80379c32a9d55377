/**
 * The oracle service bounds the requests it holds over all streams: past oracle.maxQueuedRequests a request is
 * answered RESOURCE_EXHAUSTED at once and the stream goes on. Run: node --import tsx --test test/services/oracle/overload.test.ts
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { PreferenceOracle } from "../../../gen/sppo/v1/oracle_pb.js";
import { Code } from "../../../lib/errors.js";
import { createClient } from "../../../lib/grpc/client.js";
import { mount, type RunningServer } from "../../../lib/grpc/serve.js";
import { BoundedQueue } from "../../../lib/streams/bounded-queue.js";
import type { Comparison, Oracle } from "../../../services/oracle/oracle.js";
import { oracleImplementation } from "../../../services/oracle/server.js";
import { deferred, serveForTest } from "../../lib/grpc/harness.js";

/** An oracle whose answers wait until the test releases them. */
function heldOracle(release: Promise<void>, started: () => void): Oracle {
  return {
    async compare(_prompt, candidates): Promise<Comparison> {
      started();
      await release;
      const k = candidates.length;
      return { matrix: Array.from({ length: k }, () => Array(k).fill(0.5)), truncatedTexts: 0 };
    },
    describe: () => ({ backend: "held", model: "test", maxCandidates: 4, pairwise: true }),
    close: async () => {},
  };
}

const servers: RunningServer[] = [];
after(async () => Promise.all(servers.map((s) => s.shutdown(0))));

describe("oracle overload", () => {
  it("refuses requests beyond maxQueuedRequests with RESOURCE_EXHAUSTED and answers the rest", async () => {
    const release = deferred();
    let running = 0;
    const twoRunning = deferred();
    const oracle = heldOracle(release.promise, () => {
      if (++running === 2) twoRunning.resolve();
    });
    const server = await serveForTest([mount(PreferenceOracle, oracleImplementation(oracle, { maxQueuedRequests: 2 }))]);
    servers.push(server);
    const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
    const requests = new BoundedQueue<{ requestId: string; prompt: string; candidates: string[] }>(8);
    const answers = new Map<string, number>();
    const reading = (async () => {
      for await (const r of client.compare(requests)) answers.set(r.requestId, r.error?.code ?? Code.OK);
    })();
    await requests.push({ requestId: "a", prompt: "p", candidates: ["x", "y"] });
    await requests.push({ requestId: "b", prompt: "p", candidates: ["x", "y"] });
    await twoRunning.promise; // both held: the queue is full
    await requests.push({ requestId: "c", prompt: "p", candidates: ["x", "y"] });
    await requests.push({ requestId: "d", prompt: "p", candidates: ["x", "y"] });
    while (answers.size < 2) await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual([...answers.entries()].sort(), [
      ["c", Code.RESOURCE_EXHAUSTED],
      ["d", Code.RESOURCE_EXHAUSTED],
    ]);
    release.resolve();
    requests.end();
    await reading;
    assert.equal(answers.get("a"), Code.OK);
    assert.equal(answers.get("b"), Code.OK);
    assert.equal(answers.size, 4, "every request answered exactly once");
    client.close();
  });
});
