/**
 * Pinned versions a generator does not hold: it pulls them from the optimizer on demand (a replica the loop's one
 * LoadPolicy did not reach, a restarted replica), shares one pull among concurrent requests, keeps its current
 * version, fails per request with the optimizer's code when the pull fails, and never evicts a version in use.
 * The optimizer is a real Optimizer.GetWeights server on loopback (lib/weights' weightStream), as in
 * load-policy.test.ts.
 * Run: node --import tsx --test test/services/generator/pinned-pull.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type GenerateRequestSchema,
  GenerateRequestSchema as GenerateRequestMessage,
  type GenerateResponse,
  type Generator,
  type ScoreRequestSchema,
  type ScoreResponse,
} from "../../../gen/sppo/v1/generator_pb.js";
import { generatorConfigSchema } from "../../../lib/config/generator.js";
import type { ClientConfig } from "../../../lib/config/server.js";
import { Code } from "../../../lib/errors.js";
import type { Client } from "../../../lib/grpc/client.js";
import type { RunningServer } from "../../../lib/grpc/serve.js";
import type { EngineLoader } from "../../../services/generator/engine.js";
import { deferred } from "../../lib/grpc/harness.js";
import { EngineProbe, publishTinyVersions, type ServedGenerator, serveFakeOptimizer, serveGenerator } from "./fixtures.js";

let root: string;
/** Model directory of each published version (version v has weights from seed v + 1). */
let published: Map<number, string>;
let optimizer: RunningServer;
let optimizerTarget: string;
/** GetWeights calls per version. */
const pullsOf = new Map<number, number>();
/** When set, the optimizer flips a byte in the chunk with this index (1 = the first chunk of model.safetensors). */
let corruptChunk: number | undefined;
/** When set, GetWeights waits for it before streaming. */
let weightsGate: Promise<void> | undefined;

before(async () => {
  root = mkdtempSync(join(tmpdir(), "sppo-generator-pinned-"));
  published = publishTinyVersions(root);
  optimizer = await serveFakeOptimizer(published, {
    onPull: (version) => pullsOf.set(version, (pullsOf.get(version) ?? 0) + 1),
    gate: () => weightsGate,
    corruptChunk: () => corruptChunk,
  });
  optimizerTarget = `127.0.0.1:${optimizer.port}`;
});

after(async () => {
  await optimizer.shutdown();
  rmSync(root, { recursive: true, force: true });
});

/** One generator replica on loopback: its service, its server and a client. */
type Replica = ServedGenerator;

function startReplica(overrides: Record<string, unknown> = {}, options: { engineLoader?: EngineLoader; client?: Partial<ClientConfig> } = {}): Promise<Replica> {
  const generator = generatorConfigSchema.parse({ modelDir: published.get(0), engine: "tfjs", tfjsBackend: "cpu", optimizerTarget, chunkBytes: 4096, ...overrides });
  return serveGenerator({ generator, client: options.client }, { engineLoader: options.engineLoader });
}

const request = (id: string, policyVersion?: number, seed = 11n): MessageInitShape<typeof GenerateRequestSchema> => ({
  requestId: id,
  prompt: "tell me about the cat",
  numSamples: 3,
  policyVersion,
  params: { seed, temperature: 1, topP: 1, maxNewTokens: 8 },
});

const scoreRequest = (id: string, policyVersion?: number): MessageInitShape<typeof ScoreRequestSchema> => ({
  requestId: id,
  prompt: "tell me about the cat",
  responseTexts: ["the dog is kind", "a bird sings"],
  policyVersion,
});

/** Every response of one Generate stream, by request_id. */
async function generateAll(client: Client<typeof Generator>, requests: MessageInitShape<typeof GenerateRequestSchema>[]): Promise<Map<string, GenerateResponse>> {
  const out = new Map<string, GenerateResponse>();
  for await (const r of client.generate(requests)) out.set(r.requestId, r);
  assert.equal(out.size, requests.length);
  return out;
}

async function scoreAll(client: Client<typeof Generator>, requests: MessageInitShape<typeof ScoreRequestSchema>[]): Promise<Map<string, ScoreResponse>> {
  const out = new Map<string, ScoreResponse>();
  for await (const r of client.score(requests)) out.set(r.requestId, r);
  assert.equal(out.size, requests.length);
  return out;
}

function ok<T extends { error?: { message: string } }>(response: T | undefined): T {
  assert.ok(response, "no response");
  assert.equal(response.error, undefined, response.error?.message);
  return response;
}

/** Waits (polling, no clock in the outcome) until `condition` holds. */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000 && !condition(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(condition(), `timed out waiting until ${what}`);
}

const fingerprint = (r: GenerateResponse) => r.candidates.map((c) => `${c.tokenIds.join(",")}:${c.logprob.toFixed(5)}`);
const loadedOf = async (replica: Replica) => {
  const p = await replica.client.getPolicy({});
  return { current: p.current?.version, loaded: p.loaded.map((v) => v.version) };
};

describe("two replicas, LoadPolicy sent to one", () => {
  let a: Replica;
  let b: Replica;
  let weightsDir: string;
  /** Replica a's answers pinned to version 1 (the reference). */
  let reference: GenerateResponse;
  let referenceScore: ScoreResponse;

  before(async () => {
    weightsDir = join(root, "b-weights");
    a = await startReplica();
    b = await startReplica({ weightsDir });
    await a.client.loadPolicy({ version: 1 });
    reference = ok((await generateAll(a.client, [request("ref", 1)])).get("ref"));
    referenceScore = ok((await scoreAll(a.client, [scoreRequest("ref", 1)])).get("ref"));
  });

  after(async () => {
    await a.stop();
    await b.stop();
  });

  test("the other replica pulls version 1 once for concurrent requests, answers as the first one, keeps its current version", async () => {
    const pullsBefore = pullsOf.get(1) ?? 0;
    const gate = deferred();
    weightsGate = gate.promise;
    let generated: Promise<Map<string, GenerateResponse>>;
    let scored: Promise<Map<string, ScoreResponse>>;
    try {
      generated = generateAll(b.client, [request("x", 1), request("y", 1), request("z", 1, 12n)]);
      scored = scoreAll(b.client, [scoreRequest("s", 1)]);
      // All four wait on one pull (the optimizer holds it until they are all there).
      await until(() => b.service.generator.pulling.get(1) === 4, "4 requests wait for version 1");
    } finally {
      weightsGate = undefined;
      gate.resolve();
    }
    const responses = await generated;
    const scores = await scored;
    assert.equal((pullsOf.get(1) ?? 0) - pullsBefore, 1, "one GetWeights for all four requests");
    for (const id of ["x", "y", "z"]) assert.equal(ok(responses.get(id)).policyVersion, 1);
    assert.deepEqual(fingerprint(ok(responses.get("x"))), fingerprint(reference));
    assert.deepEqual(fingerprint(ok(responses.get("y"))), fingerprint(reference));
    assert.notDeepEqual(fingerprint(ok(responses.get("z"))), fingerprint(reference));
    assert.deepEqual(ok(scores.get("s")).logprobs, referenceScore.logprobs);

    // Pulled for pinned requests only: unpinned requests still run on the version LoadPolicy made current.
    assert.deepEqual(await loadedOf(b), { current: 0, loaded: [0, 1] });
    assert.equal(ok((await generateAll(b.client, [request("unpinned")])).get("unpinned")).policyVersion, 0);
    assert.equal(b.service.generator.pulling.size, 0);
  });

  test("a restarted replica (base only, same weightsDir) serves version 1 by pulling it again", async () => {
    await b.stop();
    b = await startReplica({ weightsDir });
    assert.deepEqual(await loadedOf(b), { current: 0, loaded: [0] });
    const pullsBefore = pullsOf.get(1) ?? 0;
    const pinned = ok((await generateAll(b.client, [request("again", 1)])).get("again"));
    assert.equal(pinned.policyVersion, 1);
    assert.deepEqual(fingerprint(pinned), fingerprint(reference));
    assert.deepEqual(ok((await scoreAll(b.client, [scoreRequest("again", 1)])).get("again")).logprobs, referenceScore.logprobs);
    assert.equal((pullsOf.get(1) ?? 0) - pullsBefore, 1);
  });

  test("a version the optimizer never published fails with its NOT_FOUND naming the version; the stream goes on", async () => {
    // Requests sent one after the other on one stream: the next goes only when the previous was answered.
    const answers: GenerateResponse[] = [];
    const next = deferred();
    let answered = next;
    async function* requests() {
      yield create(GenerateRequestMessage, request("ahead", 9));
      await answered.promise;
      yield create(GenerateRequestMessage, request("after", 2));
    }
    for await (const r of b.client.generate(requests())) {
      answers.push(r);
      answered.resolve();
      answered = deferred();
    }
    assert.deepEqual(
      answers.map((r) => r.requestId),
      ["ahead", "after"],
    );
    const [ahead, following] = answers;
    assert.equal(ahead.error?.code, Code.NOT_FOUND);
    assert.equal(ahead.error?.field, "policy_version");
    assert.match(
      ahead.error?.message ?? "",
      /^policy_version: policy version 9 is not held by this generator, and pulling it from the optimizer at 127\.0\.0\.1:\d+ failed: \/sppo\.v1\.Optimizer\/GetWeights: version: 9 was never published$/,
    );
    assert.equal(ok(following).policyVersion, 2);
    // Nothing is remembered about the failure: the next request asks the optimizer again.
    const pullsBefore = pullsOf.get(9) ?? 0;
    assert.equal((await generateAll(b.client, [request("ahead-again", 9)])).get("ahead-again")?.error?.code, Code.NOT_FOUND);
    assert.equal((pullsOf.get(9) ?? 0) - pullsBefore, 1);
  });

  test("a corrupted pull fails its requests with DATA_LOSS; the next request pulls again and succeeds", async () => {
    corruptChunk = 1; // the first chunk of model.safetensors
    let failed: GenerateResponse | undefined;
    try {
      failed = (await generateAll(b.client, [request("corrupt", 3)])).get("corrupt");
    } finally {
      corruptChunk = undefined;
    }
    assert.equal(failed?.error?.code, Code.DATA_LOSS);
    assert.match(failed?.error?.message ?? "", /^policy_version: policy version 3 is not held by this generator, and pulling it from the optimizer at \S+ failed: .*model\.safetensors: SHA-256 [0-9a-f]{64} does not match/);
    assert.equal(ok((await generateAll(b.client, [request("clean", 3)])).get("clean")).policyVersion, 3);
  });
});

test("an optimizer that cannot be reached: UNAVAILABLE naming the version and the target; other requests go on", async () => {
  const replica = await startReplica({ optimizerTarget: "127.0.0.1:1" }, { client: { maxAttempts: 2, initialBackoffMs: 10, maxBackoffMs: 20 } });
  try {
    const responses = await generateAll(replica.client, [request("far", 1), request("base", 0), request("current")]);
    const far = responses.get("far");
    assert.equal(far?.error?.code, Code.UNAVAILABLE);
    assert.match(far?.error?.message ?? "", /^policy_version: policy version 1 is not held by this generator, and pulling it from the optimizer at 127\.0\.0\.1:1 failed: \/sppo\.v1\.Optimizer\/GetWeights: /);
    assert.equal(ok(responses.get("base")).policyVersion, 0);
    assert.equal(ok(responses.get("current")).policyVersion, 0);
  } finally {
    await replica.stop();
  }
});

test("without optimizerTarget a pinned version not held is FAILED_PRECONDITION saying how to fix it", async () => {
  const replica = await startReplica({ optimizerTarget: "" });
  try {
    const generated = (await generateAll(replica.client, [request("pin", 1)])).get("pin");
    const scored = (await scoreAll(replica.client, [scoreRequest("pin", 1)])).get("pin");
    for (const response of [generated, scored]) {
      assert.equal(response?.error?.code, Code.FAILED_PRECONDITION);
      assert.equal(response?.error?.field, "policy_version");
      assert.equal(
        response?.error?.message,
        "policy_version: policy version 1 is not held by this generator (held: 0; current: 0); set generator.optimizerTarget so that the generator pulls pinned versions from the optimizer, or call LoadPolicy(1) on this generator first",
      );
    }
  } finally {
    await replica.stop();
  }
});

describe("eviction of pulled versions (versionsInMemory 2)", () => {
  const probe = new EngineProbe();
  let replica: Replica;
  before(async () => {
    replica = await startReplica({ versionsInMemory: 2 }, { engineLoader: probe.loader() });
  });
  after(async () => {
    probe.release();
    await replica.stop();
  });

  test("a version a running request holds is not evicted by a pull; it goes when its request is done", async () => {
    assert.equal(ok((await generateAll(replica.client, [request("v1", 1)])).get("v1")).policyVersion, 1);
    assert.deepEqual(await loadedOf(replica), { current: 0, loaded: [0, 1] });

    const { entered } = probe.hold();
    const onV1 = generateAll(replica.client, [request("held", 1)]);
    await entered; // the version 1 request is in the engine
    const onV2 = generateAll(replica.client, [request("v2", 2)]);
    await until(() => replica.service.generator.getPolicy().loaded.length === 3, "version 2 is pulled");
    // Over the limit while version 1 is in use: neither it nor the version just pulled for a waiting request goes.
    assert.deepEqual(await loadedOf(replica), { current: 0, loaded: [0, 1, 2] });
    probe.release();
    assert.equal(ok((await onV1).get("held")).policyVersion, 1);
    assert.equal(ok((await onV2).get("v2")).policyVersion, 2);
    assert.deepEqual(await loadedOf(replica), { current: 0, loaded: [0, 2] });
  });

  test("a request cancelled while it waits for a pull: the pull goes on, and the version serves the next request", async () => {
    const gate = deferred();
    weightsGate = gate.promise;
    const pullsBefore = pullsOf.get(3) ?? 0;
    const controller = new AbortController();
    let pending: Promise<GenerateResponse>;
    try {
      pending = replica.service.generator.generate(create(GenerateRequestMessage, request("gone", 3)), controller.signal);
      await until(() => replica.service.generator.pulling.get(3) === 1, "the request waits for version 3");
      controller.abort();
      const gone = await pending;
      assert.equal(gone.error?.code, Code.CANCELLED);
      assert.equal(replica.service.generator.pulling.get(3), 0);
    } finally {
      weightsGate = undefined;
      gate.resolve();
    }
    await until(() => replica.service.generator.pulling.size === 0, "the pull of version 3 ends");
    // Landed with nobody waiting: kept (the oldest unused version, 2, made room), not pulled again.
    assert.deepEqual(await loadedOf(replica), { current: 0, loaded: [0, 3] });
    assert.equal(ok((await generateAll(replica.client, [request("next", 3)])).get("next")).policyVersion, 3);
    assert.equal((pullsOf.get(3) ?? 0) - pullsBefore, 1);
  });
});
