/**
 * sppo.v1.PreferenceOracle over real gRPC on 127.0.0.1:0: ONNX models built by the project (pairwise and reward)
 * checked against hand-computed matrices, responses matched by request_id in any order, bad requests answered with
 * `error` while the stream goes on, NaN, the intransitive judge, and the remote backend talking to
 * `sppo serve oracle` in another process.
 * Run: node --import tsx --test test/services/oracle/server.test.ts
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, describe, it } from "node:test";
import type { CompareResponse } from "../../../gen/sppo/v1/oracle_pb.js";
import { Code, RpcError } from "../../../lib/errors.js";
import { DEFAULT_WEIGHTS, type ScoreWeights } from "../../../scripts/make-default-oracle.js";
import { AsyncQueue } from "../../../lib/streams/async-queue.js";
import { createOracle } from "../../../services/oracle/create-oracle.js";
import { type Oracle, checkedOracle } from "../../../services/oracle/oracle.js";
import { SyntheticOracle } from "../../../services/oracle/synthetic.js";
import { assertMatrixClose, expectedMatrix, modelDir, nanModelDir, oracleConfig, serveOracle, tempDir } from "./fixtures.js";

const tmp = tempDir();
after(() => tmp.remove());
const batching = { maxBatch: 128, maxWaitMs: 1, maxConcurrentRuns: 1 };

const rowsOf = (r: CompareResponse) => Array.from({ length: r.k }, (_, i) => r.probabilities.slice(i * r.k, (i + 1) * r.k));

/** Sends all requests on one Compare stream and collects the responses by request_id. */
async function compareAll(client: Awaited<ReturnType<typeof serveOracle>>["client"], requests: { requestId: string; prompt: string; candidates: string[] }[]) {
  const byId = new Map<string, CompareResponse>();
  for await (const response of client.compare(requests)) byId.set(response.requestId, response);
  return byId;
}

describe("PreferenceOracle service", () => {
  it("answers a stream of requests with the pairwise model's matrices, row-major, matched by request_id", async () => {
    const weights: ScoreWeights = { ...DEFAULT_WEIGHTS, good: 1.25, positionBias: -0.4 };
    const oracle = await createOracle(oracleConfig({ modelDir: modelDir(tmp.dir, "pairwise", "pairwise", { weights }), batching }));
    const { client, stop } = await serveOracle(oracle);
    try {
      const requests = [
        { requestId: "a", prompt: "describe the garden.", candidates: ["the garden is lovely and calm.", "the garden is dull.", "a noisy , cold city."] },
        { requestId: "b", prompt: "what is the robot like?", candidates: ["the robot is helpful.", "the robot is broken and lazy."] },
        { requestId: "c", prompt: "write about the song.", candidates: ["a song.", "the song is warm.", "the bird is brave.", "it is a grim song."] },
      ];
      const byId = await compareAll(client, requests);
      assert.equal(byId.size, 3);
      for (const request of requests) {
        const response = byId.get(request.requestId)!;
        assert.equal(response.error, undefined);
        assert.equal(response.k, request.candidates.length);
        assert.equal(response.probabilities.length, request.candidates.length ** 2);
        assertMatrixClose(rowsOf(response), expectedMatrix(request.prompt, request.candidates, weights));
      }
      // An over-long candidate is cut, not refused: PairRM's budget for it is ⌊(1224 + 2·412 − 7) / 2⌋ = 1020 tokens
      // ([CLS] <|source|> describe the garden . [SEP] is 7), of which 1017 words after [CLS], the marker and [SEP].
      const long = `the garden is ${"kind ".repeat(1100)}.`;
      const cut = (await compareAll(client, [{ requestId: "long", prompt: "describe the garden.", candidates: [long, "the garden is dull."] }])).get("long")!;
      assert.equal(cut.error, undefined);
      assert.equal(cut.truncatedTexts, 1);
      const kept = `the garden is ${"kind ".repeat(1017 - 3)}`;
      assertMatrixClose(rowsOf(cut), expectedMatrix("describe the garden.", [kept, "the garden is dull."], weights));

      const described = await client.describe({});
      assert.equal(described.backend, "pairwise-onnx");
      assert.equal(described.pairwise, true);
      assert.equal(described.maxCandidates, 16);
    } finally {
      await stop();
      await oracle.close();
    }
  });

  it("answers through the reward model (Bradley-Terry)", async () => {
    const weights: ScoreWeights = { ...DEFAULT_WEIGHTS, bad: 2, offSubject: 0.25 };
    const oracle = await createOracle(oracleConfig({ backend: "reward-onnx", modelDir: modelDir(tmp.dir, "reward", "reward", { weights }), batching }));
    const { client, stop } = await serveOracle(oracle);
    try {
      const request = { requestId: "r", prompt: "tell me about the teacher.", candidates: ["the teacher is kind.", "the teacher is rude and cold.", "the friend is honest."] };
      const response = (await compareAll(client, [request])).get("r")!;
      assertMatrixClose(rowsOf(response), expectedMatrix(request.prompt, request.candidates, weights));
      assert.equal((await client.describe({})).pairwise, false);
    } finally {
      await stop();
      await oracle.close();
    }
  });

  it("sends each response when it is ready: a slow request does not hold back a later one", async () => {
    let releaseSlow!: () => void;
    const slowGate = new Promise<void>((r) => (releaseSlow = r));
    const judge = new SyntheticOracle("synthetic-adjectives", 8, 1);
    const gated: Oracle = {
      compare: async (prompt, candidates) => {
        if (prompt.startsWith("slow")) await slowGate;
        return judge.compare(prompt, candidates);
      },
      describe: () => judge.describe(),
      close: async () => {},
    };
    const { client, stop } = await serveOracle(checkedOracle(gated));
    try {
      const requests = new AsyncQueue<{ requestId: string; prompt: string; candidates: string[] }>();
      requests.push({ requestId: "slow", prompt: "slow: the cat", candidates: ["kind", "rude"] });
      requests.push({ requestId: "fast", prompt: "fast: the cat", candidates: ["rude", "kind"] });
      const order: string[] = [];
      for await (const response of client.compare(requests)) {
        order.push(response.requestId);
        if (response.requestId === "fast") {
          releaseSlow();
          requests.end();
        }
      }
      assert.deepEqual(order, ["fast", "slow"]);
    } finally {
      await stop();
    }
  });

  it("survives a client cancelling a stream with a request in progress", async () => {
    let releaseSlow!: () => void;
    const slowGate = new Promise<void>((r) => (releaseSlow = r));
    let started!: () => void;
    const slowStarted = new Promise<void>((r) => (started = r));
    const judge = new SyntheticOracle("synthetic-adjectives", 8, 1);
    const gated: Oracle = {
      compare: async (prompt, candidates) => {
        if (prompt.startsWith("slow")) {
          started();
          await slowGate;
        }
        return judge.compare(prompt, candidates);
      },
      describe: () => judge.describe(),
      close: async () => {},
    };
    const { client, stop } = await serveOracle(checkedOracle(gated));
    try {
      const controller = new AbortController();
      const requests = new AsyncQueue<{ requestId: string; prompt: string; candidates: string[] }>();
      requests.push({ requestId: "slow", prompt: "slow: the cat", candidates: ["kind", "rude"] });
      const responses = client.compare(requests, { signal: controller.signal });
      const reading = (async () => {
        for await (const _ of responses) {
          // nothing arrives before the cancel
        }
      })();
      await slowStarted;
      controller.abort();
      await assert.rejects(reading, (err: unknown) => err instanceof RpcError && err.code === Code.CANCELLED);
      releaseSlow();
      const after = await compareAll(client, [{ requestId: "next", prompt: "the cat", candidates: ["kind", "rude"] }]);
      assert.equal(after.get("next")?.error, undefined);
      assert.ok(Math.abs(after.get("next")!.probabilities[1] - 1 / (1 + Math.exp(-2))) < 1e-12);
    } finally {
      await stop();
    }
  });

  it("answers bad requests with error set (code, message, field) and keeps the stream going", async () => {
    const oracle = await createOracle(oracleConfig({ backend: "synthetic-intransitive", maxCandidates: 3 }));
    const { client, stop } = await serveOracle(oracle);
    try {
      const byId = await compareAll(client, [
        { requestId: "one", prompt: "the cat", candidates: ["kind"] },
        { requestId: "many", prompt: "the cat", candidates: ["a", "b", "c", "d"] },
        { requestId: "empty", prompt: "the cat", candidates: ["kind", ""] },
        { requestId: "noprompt", prompt: " ", candidates: ["kind", "big"] },
        { requestId: "ok", prompt: "the cat", candidates: ["kind", "big", "rude"] },
      ]);
      const error = (id: string) => byId.get(id)?.error;
      assert.equal(error("one")?.code, Code.INVALID_ARGUMENT);
      assert.equal(error("one")?.field, "candidates");
      assert.match(error("one")?.message ?? "", /at least 2 candidates, got 1/);
      assert.equal(error("many")?.field, "candidates");
      assert.match(error("many")?.message ?? "", /at most 3 candidates/);
      assert.equal(error("empty")?.field, "candidates[1]");
      assert.equal(error("noprompt")?.field, "prompt");
      // The valid request after them: the intransitive judge's cycle kind ≻ big ≻ rude ≻ kind.
      const ok = byId.get("ok")!;
      assert.equal(ok.error, undefined);
      const m = rowsOf(ok);
      assert.ok(m[0][1] > 0.5 && m[1][2] > 0.5 && m[2][0] > 0.5, `expected a cycle, got ${JSON.stringify(m)}`);
    } finally {
      await stop();
      await oracle.close();
    }
  });

  it("fails a request whose model output is NaN with INTERNAL and keeps serving", async () => {
    const oracle = await createOracle(oracleConfig({ modelDir: nanModelDir(tmp.dir), batching }));
    const { client, stop } = await serveOracle(oracle);
    try {
      const byId = await compareAll(client, [
        { requestId: "nan", prompt: "the river", candidates: ["a grim river.", "a calm river."] },
        { requestId: "fine", prompt: "the river", candidates: ["a calm river.", "a long river."] },
      ]);
      assert.equal(byId.get("nan")?.error?.code, Code.INTERNAL);
      assert.match(byId.get("nan")?.error?.message ?? "", /not finite/);
      assert.deepEqual(byId.get("fine")?.probabilities, [0.5, 0.5, 0.5, 0.5]);
      // The same server answers the next stream too.
      const again = await compareAll(client, [{ requestId: "again", prompt: "the river", candidates: ["calm", "long"] }]);
      assert.equal(again.get("again")?.error, undefined);
    } finally {
      await stop();
      await oracle.close();
    }
  });
});

/** Starts `sppo serve oracle --port 0` in another process with `config`; resolves with its port once it serves. */
async function startOracleProcess(config: Record<string, unknown>): Promise<{ child: ChildProcess; port: number }> {
  const file = join(tmp.dir, `serve-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify({ server: { host: "127.0.0.1", drainDelayMs: 0, shutdownGraceMs: 2_000 }, oracle: config }));
  const child = spawn(process.execPath, ["bin/sppo.mjs", "serve", "oracle", "--port", "0", "--metrics-port", "-1", "--config", file], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, SPPO_LOG_LEVEL: "info" },
  });
  let stderr = "";
  const lines = createInterface({ input: child.stderr! });
  const serving = new Promise<number>((resolve) => {
    lines.on("line", (line) => {
      stderr += `${line}\n`;
      // The structured "serving" log line carries the bound address.
      let entry: { msg?: string; address?: string } = {};
      try {
        entry = JSON.parse(line);
      } catch {
        return; // not a log line
      }
      if (entry.msg === "serving" && entry.address) resolve(Number(entry.address.split(":").at(-1)));
    });
  });
  const exited = once(child, "exit").then(([code]) => {
    throw new Error(`sppo serve oracle exited with ${code}: ${stderr}`);
  });
  const port = await Promise.race([serving, exited]);
  return { child, port };
}

describe("remote backend", () => {
  it("uses an oracle in another process through the contract, also when served itself", async () => {
    const weights: ScoreWeights = { ...DEFAULT_WEIGHTS, good: 0.5, onSubject: 2 };
    const dir = modelDir(tmp.dir, "remote-reward", "reward", { weights });
    const { child, port } = await startOracleProcess({ backend: "reward-onnx", modelDir: dir, maxCandidates: 6 });
    try {
      const remote = await createOracle(oracleConfig({ backend: "remote", remote: { target: `127.0.0.1:${port}` }, maxCandidates: 10 }));
      assert.equal(remote.describe().backend, "remote");
      assert.equal(remote.describe().maxCandidates, 6); // the smaller limit of the two
      assert.equal(remote.describe().pairwise, false);
      assert.match(remote.describe().model, /^reward-onnx: sppo-default-reward/);

      const prompt = "describe the mountain.";
      const candidates = ["the mountain is calm.", "the mountain is grim and cold.", "the village is bright."];
      const direct = await Promise.all([0, 1, 2].map(() => remote.compare(prompt, candidates)));
      for (const r of direct) assertMatrixClose(r.matrix, expectedMatrix(prompt, candidates, weights));

      // The pipeline's path: a client → this process's oracle service (remote backend) → the other process.
      const { client, stop } = await serveOracle(remote);
      try {
        const response = (await compareAll(client, [{ requestId: "x", prompt, candidates }])).get("x")!;
        assertMatrixClose(rowsOf(response), expectedMatrix(prompt, candidates, weights));
        const tooMany = (await compareAll(client, [{ requestId: "y", prompt, candidates: Array(7).fill("kind") }])).get("y")!;
        assert.equal(tooMany.error?.code, Code.INVALID_ARGUMENT);
      } finally {
        await stop();
      }

      // The other process goes away: requests fail with a status instead of hanging.
      child.kill("SIGKILL");
      await once(child, "exit");
      await assert.rejects(remote.compare(prompt, candidates), (err: unknown) => err instanceof RpcError && err.code === Code.UNAVAILABLE);
      await remote.close();
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
  });

  it("fails at start-up when the remote cannot be reached", async () => {
    await assert.rejects(
      createOracle(oracleConfig({ backend: "remote", remote: { target: "127.0.0.1:1", connectTimeoutMs: 500 } }), { client: { maxAttempts: 2, initialBackoffMs: 10 } }),
      (err: unknown) => err instanceof RpcError && err.code === Code.FAILED_PRECONDITION && /remote oracle 127\.0\.0\.1:1: Describe failed/.test(err.message),
    );
  });
});
