/**
 * The sppo.v1.Generator service over real gRPC on loopback, on a tiny GPT-2 written in the real format.
 * Run: node --import tsx --test test/services/generator/server.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { FinishReason, type GenerateRequestSchema, type GenerateResponse, type Generator, type ScoreRequestSchema, type ScoreResponse } from "../../../gen/sppo/v1/generator_pb.js";
import { generatorConfigSchema } from "../../../lib/config/generator.js";
import { Code, RpcError } from "../../../lib/errors.js";
import type { Client } from "../../../lib/grpc/client.js";
import { encodePrompt } from "../../../models/index.js";
import { createGeneratorService } from "../../../services/generator/server.js";
import { CONTEXT, EngineProbe, serveGenerator, tinyTokenizer, writeTinyPolicy } from "./fixtures.js";

type GenInit = MessageInitShape<typeof GenerateRequestSchema>;
type ScoreInit = MessageInitShape<typeof ScoreRequestSchema>;

let root: string;
let baseDir: string;

before(() => {
  root = mkdtempSync(join(tmpdir(), "sppo-generator-test-"));
  baseDir = join(root, "base");
  writeTinyPolicy(baseDir, 1);
});
after(() => rmSync(root, { recursive: true, force: true }));

/** A generator service on loopback, its client and a way to stop both. */
function startGenerator(overrides: Record<string, unknown> = {}, probe?: EngineProbe) {
  const config = generatorConfigSchema.parse({ modelDir: baseDir, engine: "tfjs", tfjsBackend: "cpu", maxSamples: 8, maxBatch: 16, ...overrides });
  return serveGenerator({ generator: config }, { engineLoader: probe?.loader() });
}

/** Sends `requests` on one Generate stream and returns the responses by request_id (each must come exactly once). */
async function generateAll(client: Client<typeof Generator>, requests: GenInit[]): Promise<Map<string, GenerateResponse>> {
  const out = new Map<string, GenerateResponse>();
  for await (const r of client.generate(requests)) {
    assert.equal(out.has(r.requestId), false, `${r.requestId} answered twice`);
    out.set(r.requestId, r);
  }
  assert.deepEqual([...out.keys()].sort(), requests.map((r) => r.requestId as string).sort());
  return out;
}

async function scoreAll(client: Client<typeof Generator>, requests: ScoreInit[]): Promise<Map<string, ScoreResponse>> {
  const out = new Map<string, ScoreResponse>();
  for await (const r of client.score(requests)) {
    assert.equal(out.has(r.requestId), false, `${r.requestId} answered twice`);
    out.set(r.requestId, r);
  }
  assert.equal(out.size, requests.length);
  return out;
}

function ok<T extends { error?: { code: number; message: string } }>(response: T | undefined): T {
  assert.ok(response, "no response");
  assert.equal(response.error, undefined, `unexpected error: ${response.error?.message}`);
  return response;
}

const tokensOf = (r: GenerateResponse) => r.candidates.map((c) => c.tokenIds);

describe("Generator over gRPC", () => {
  let g: Awaited<ReturnType<typeof startGenerator>>;
  before(async () => {
    g = await startGenerator();
  });
  after(() => g.stop());

  test("Generate: K candidates per prompt, matched by request_id, with the engine and version named", async () => {
    const res = await generateAll(g.client, [
      { requestId: "a", prompt: "tell me about the cat", numSamples: 3, params: { seed: 1n, maxNewTokens: 6 } },
      { requestId: "b", prompt: "the dog", numSamples: 2, params: { seed: 2n, temperature: 1, topP: 1 } },
    ]);
    const a = ok(res.get("a"));
    assert.equal(a.candidates.length, 3);
    assert.equal(a.policyVersion, 0);
    assert.match(a.engine, /^tfjs-cpu$/);
    assert.deepEqual([...a.promptTokenIds], encodePrompt(tinyTokenizer(), "tell me about the cat"));
    for (const [i, c] of a.candidates.entries()) {
      assert.equal(c.index, i);
      assert.ok(c.tokenIds.length >= 1 && c.tokenIds.length <= 6);
      assert.ok(c.logprob < 0 && Number.isFinite(c.logprob));
      // The finish reason agrees with the tokens: EOS (id 2) ends a sample, otherwise it ran to max_new_tokens.
      if (c.finishReason === FinishReason.EOS) assert.equal(c.tokenIds.at(-1), 2);
      else {
        assert.equal(c.finishReason, FinishReason.LENGTH);
        assert.equal(c.tokenIds.length, 6);
      }
      assert.equal(c.text, tinyTokenizer().decode([...c.tokenIds]));
    }
    assert.equal(ok(res.get("b")).candidates.length, 2);
  });

  test("seeded requests reproduce their tokens, also amid unseeded traffic; other seeds differ", async () => {
    const req = (id: string, seed: bigint): GenInit => ({ requestId: id, prompt: "the cat", numSamples: 4, params: { seed, temperature: 1, topP: 1, maxNewTokens: 8 } });
    const first = ok((await generateAll(g.client, [req("x", 42n)])).get("x"));
    const noise = Array.from({ length: 5 }, (_, i): GenInit => ({ requestId: `n${i}`, prompt: "a bird", numSamples: 3, params: { temperature: 1, topP: 1, maxNewTokens: 8 } }));
    const again = await generateAll(g.client, [...noise.slice(0, 2), req("x", 42n), req("y", 43n), ...noise.slice(2)]);
    assert.deepEqual(tokensOf(ok(again.get("x"))), tokensOf(first));
    assert.deepEqual(
      ok(again.get("x")).candidates.map((c) => c.logprob),
      first.candidates.map((c) => c.logprob),
    );
    assert.notDeepEqual(tokensOf(ok(again.get("y"))), tokensOf(first));
    // The K samples of one request are different draws, not copies.
    assert.ok(new Set(first.candidates.map((c) => c.tokenIds.join())).size > 1);
  });

  test("Score of each sampled response equals its candidate logprob; token counts match", async () => {
    const gen = ok((await generateAll(g.client, [{ requestId: "s", prompt: "tell me about the dog", numSamples: 4, params: { seed: 7n, temperature: 1, topP: 1, maxNewTokens: 10 } }])).get("s"));
    const scored = ok(
      (
        await scoreAll(g.client, [
          { requestId: "s", promptTokenIds: gen.promptTokenIds, responses: gen.candidates.map((c) => ({ tokenIds: c.tokenIds })) },
        ])
      ).get("s"),
    );
    assert.equal(scored.policyVersion, 0);
    assert.deepEqual(
      [...scored.tokenCounts],
      gen.candidates.map((c) => c.tokenIds.length),
    );
    for (const [i, c] of gen.candidates.entries()) assert.ok(Math.abs(scored.logprobs[i] - c.logprob) < 1e-4, `${scored.logprobs[i]} vs ${c.logprob}`);
  });

  test("Score by text equals Score of the encoded text followed by EOS", async () => {
    const tok = tinyTokenizer();
    const texts = ["the cat is kind", "a dog runs fast and"];
    const res = await scoreAll(g.client, [
      { requestId: "text", prompt: "tell me about the cat", responseTexts: texts },
      { requestId: "ids", promptTokenIds: encodePrompt(tok, "tell me about the cat"), responses: texts.map((t) => ({ tokenIds: [...tok.encode(t), 2] })) },
    ]);
    const byText = ok(res.get("text"));
    const byIds = ok(res.get("ids"));
    assert.deepEqual([...byText.tokenCounts], [5, 6]);
    for (let i = 0; i < texts.length; i++) assert.ok(Math.abs(byText.logprobs[i] - byIds.logprobs[i]) < 1e-5);
    // An independent check that scores are real log-probs: ≤ 0, and lower for longer responses of the same words.
    assert.ok(byText.logprobs.every((l) => l < 0));
  });

  test("bad requests are answered with an error naming the field, and the stream goes on", async () => {
    const good: GenInit = { requestId: "good", prompt: "the cat", numSamples: 1, params: { seed: 1n, maxNewTokens: 2 } };
    const long = Array.from({ length: CONTEXT }, () => 5);
    const cases: [GenInit, Code, string, RegExp][] = [
      [{ requestId: "empty", prompt: "  ", numSamples: 1 }, Code.INVALID_ARGUMENT, "prompt", /empty/],
      [{ requestId: "k0", prompt: "the cat", numSamples: 0 }, Code.INVALID_ARGUMENT, "num_samples", /≥ 1/],
      [{ requestId: "kbig", prompt: "the cat", numSamples: 9 }, Code.INVALID_ARGUMENT, "num_samples", /9 exceeds the maximum of 8/],
      [{ requestId: "temp", prompt: "the cat", numSamples: 1, params: { temperature: -0.5 } }, Code.INVALID_ARGUMENT, "params.temperature", /≥ 0/],
      [{ requestId: "nan", prompt: "the cat", numSamples: 1, params: { temperature: Number.NaN } }, Code.INVALID_ARGUMENT, "params.temperature", /finite/],
      [{ requestId: "p0", prompt: "the cat", numSamples: 1, params: { topP: 0 } }, Code.INVALID_ARGUMENT, "params.top_p", /\(0, 1\]/],
      [{ requestId: "p2", prompt: "the cat", numSamples: 1, params: { topP: 1.5 } }, Code.INVALID_ARGUMENT, "params.top_p", /\(0, 1\]/],
      [{ requestId: "m0", prompt: "the cat", numSamples: 1, params: { maxNewTokens: 0 } }, Code.INVALID_ARGUMENT, "params.max_new_tokens", /\[1, 1024\]/],
      [{ requestId: "long", promptTokenIds: long, numSamples: 1 }, Code.INVALID_ARGUMENT, "prompt_token_ids", /32 tokens, but the policy.s context is 32 tokens .*at most 31 prompt tokens/],
      [{ requestId: "vocab", promptTokenIds: [1, 5, 999], numSamples: 1 }, Code.INVALID_ARGUMENT, "prompt_token_ids[2]", /999 is outside the vocabulary \[0, 21\)/],
      [{ requestId: "pin", prompt: "the cat", numSamples: 1, policyVersion: 5 }, Code.FAILED_PRECONDITION, "policy_version", /version 5 is not held .*held: 0/],
    ];
    const res = await generateAll(g.client, [good, ...cases.map(([r]) => r), { ...good, requestId: "good2" }]);
    ok(res.get("good"));
    ok(res.get("good2"));
    for (const [r, code, field, pattern] of cases) {
      const e = res.get(r.requestId as string)?.error;
      assert.ok(e, `${r.requestId}: no error`);
      assert.equal(e.code, code, `${r.requestId}: ${e.message}`);
      assert.equal(e.field, field, r.requestId);
      assert.ok(e.message.startsWith(`${field}: `), e.message);
      assert.match(e.message, pattern);
    }
    // A prompt of exactly context − 1 tokens is accepted and gets one token.
    const edge = ok((await generateAll(g.client, [{ requestId: "edge", promptTokenIds: long.slice(1), numSamples: 1, params: { maxNewTokens: 5, seed: 3n } }])).get("edge"));
    assert.equal(edge.candidates[0].tokenIds.length, 1);
  });

  test("temperature 0 is greedy, stop_on_eos false runs to max_new_tokens, and the context cuts long responses", async () => {
    const res = await generateAll(g.client, [
      { requestId: "greedy1", prompt: "the cat", numSamples: 3, params: { temperature: 0, maxNewTokens: 6 } },
      { requestId: "greedy2", prompt: "the cat", numSamples: 2, params: { temperature: 0, maxNewTokens: 6 } },
      { requestId: "noeos", prompt: "the cat", numSamples: 4, params: { seed: 4n, temperature: 1, topP: 1, maxNewTokens: 20, stopOnEos: false } },
      { requestId: "ctx", promptTokenIds: Array.from({ length: CONTEXT - 3 }, () => 7), numSamples: 2, params: { seed: 5n, maxNewTokens: 50, stopOnEos: false } },
      { requestId: "topk1", prompt: "the cat", numSamples: 3, params: { seed: 6n, temperature: 1, topP: 1, topK: 1, maxNewTokens: 6 } },
    ]);
    const greedy = [...tokensOf(ok(res.get("greedy1"))), ...tokensOf(ok(res.get("greedy2")))];
    assert.ok(greedy.every((t) => t.join() === greedy[0].join()), "greedy samples differ");
    // top_k = 1 is greedy too, whatever the seed.
    assert.deepEqual(tokensOf(ok(res.get("topk1"))), greedy.slice(0, 3));
    for (const c of ok(res.get("noeos")).candidates) {
      assert.equal(c.tokenIds.length, 20);
      assert.equal(c.finishReason, FinishReason.LENGTH);
    }
    for (const c of ok(res.get("ctx")).candidates) {
      assert.equal(c.tokenIds.length, 3);
      assert.equal(c.finishReason, FinishReason.LENGTH);
    }
  });

  test("bad Score requests are answered with errors too", async () => {
    const res = await scoreAll(g.client, [
      { requestId: "none", prompt: "the cat" },
      { requestId: "toolong", promptTokenIds: [1, 5], responses: [{ tokenIds: [5] }, { tokenIds: Array.from({ length: CONTEXT - 1 }, () => 6) }] },
      { requestId: "vocab", promptTokenIds: [1, 5], responses: [{ tokenIds: [5, -1] }] },
      { requestId: "fine", promptTokenIds: [1, 5], responses: [{ tokenIds: [] }, { tokenIds: [6] }] },
    ]);
    assert.equal(res.get("none")?.error?.field, "responses");
    assert.equal(res.get("toolong")?.error?.field, "responses[1].token_ids");
    assert.match(res.get("toolong")?.error?.message ?? "", /prompt \(2\) \+ response \(31\) = 33 tokens exceed the policy's context of 32/);
    assert.equal(res.get("vocab")?.error?.field, "responses[0].token_ids[1]");
    const fine = ok(res.get("fine"));
    assert.deepEqual([...fine.tokenCounts], [0, 1]);
    assert.equal(fine.logprobs[0], 0);
  });

  test("GetPolicy reports the base version with its checksum, family and size", async () => {
    const p = await g.client.getPolicy({});
    assert.equal(p.current?.version, 0);
    assert.equal(p.current?.family, "gpt2");
    assert.match(p.current?.sha256 ?? "", /^[0-9a-f]{64}$/);
    assert.ok(Number(p.current?.parameters) > 1000);
    assert.deepEqual(
      p.loaded.map((v) => v.version),
      [0],
    );
  });
});

describe("scheduling", () => {
  test("unseeded requests that wait together share one engine run", { timeout: 30_000 }, async () => {
    const probe = new EngineProbe();
    const g = await startGenerator({}, probe);
    try {
      const { entered } = probe.hold();
      const params = { temperature: 1, topP: 1, maxNewTokens: 4 };
      const requests: GenInit[] = [
        { requestId: "seeded", prompt: "the cat", numSamples: 2, params: { ...params, seed: 5n } },
        ...["the dog", "a bird sings", "tell me about the cat"].map((prompt, i): GenInit => ({ requestId: `u${i}`, prompt, numSamples: 2, params })),
      ];
      const done = generateAll(g.client, requests);
      await entered;
      // The first run is held; the other three requests queue behind it.
      while (g.service.generator.queued < 3) await new Promise((r) => setImmediate(r));
      probe.release();
      const res = await done;
      for (const r of res.values()) ok(r);
      assert.equal(probe.sampleCalls.length, 2, `runs: ${probe.sampleCalls.map((c) => c.length)}`);
      assert.deepEqual(
        probe.sampleCalls.map((c) => c.length),
        [2, 6],
      );
    } finally {
      probe.release();
      await g.stop();
    }
  });

  test("overload is answered RESOURCE_EXHAUSTED per request; nothing is lost or answered twice", async () => {
    const probe = new EngineProbe();
    const g = await startGenerator({ maxQueuedRequests: 2, maxInFlightPerStream: 64 }, probe);
    try {
      const { entered } = probe.hold();
      const requests = Array.from({ length: 20 }, (_, i): GenInit => ({ requestId: `r${i}`, prompt: "the cat", numSamples: 1, params: { seed: BigInt(i), maxNewTokens: 2 } }));
      const responses: GenerateResponse[] = [];
      let released = false;
      for await (const r of g.client.generate(requests)) {
        responses.push(r);
        // Once refusals came back the queue is full: let the held run go.
        if (!released && r.error) {
          await entered;
          probe.release();
          released = true;
        }
      }
      assert.equal(responses.length, 20);
      assert.equal(new Set(responses.map((r) => r.requestId)).size, 20);
      const refused = responses.filter((r) => r.error);
      assert.ok(refused.length >= 1 && refused.length <= 17, `${refused.length} refused`);
      for (const r of refused) {
        assert.equal(r.error?.code, Code.RESOURCE_EXHAUSTED);
        assert.match(r.error?.message ?? "", /maxQueuedRequests/);
      }
      for (const r of responses.filter((x) => !x.error)) assert.equal(r.candidates.length, 1);
      // The service still serves.
      ok((await generateAll(g.client, [{ requestId: "after", prompt: "the dog", numSamples: 1 }])).get("after"));
    } finally {
      probe.release();
      await g.stop();
    }
  });

  test("a cancelled stream's queued requests leave the queue without running", { timeout: 30_000 }, async () => {
    const probe = new EngineProbe();
    // One row per run: the first request runs alone (seeded requests that arrive together would share a run).
    const g = await startGenerator({ maxSamples: 1, maxBatch: 1 }, probe);
    try {
      const { entered } = probe.hold();
      const abort = new AbortController();
      const requests = Array.from({ length: 4 }, (_, i): GenInit => ({ requestId: `c${i}`, prompt: "the cat", numSamples: 1, params: { seed: BigInt(i), maxNewTokens: 2 } }));
      const reading = (async () => {
        for await (const _ of g.client.generate(requests, { signal: abort.signal })) {
          // nothing arrives before the cancel
        }
      })();
      await entered;
      while (g.service.generator.queued < 3) await new Promise((r) => setImmediate(r));
      abort.abort();
      await assert.rejects(reading, (err: unknown) => err instanceof RpcError && err.code === Code.CANCELLED);
      while (g.service.generator.queued > 0) await new Promise((r) => setImmediate(r));
      probe.release();
      // The service goes on, and only the run that had started ran (plus this one).
      ok((await generateAll(g.client, [{ requestId: "after", prompt: "the dog", numSamples: 1, params: { seed: 9n } }])).get("after"));
      assert.equal(probe.sampleCalls.length, 2);
    } finally {
      probe.release();
      await g.stop();
    }
  });
});

test("start-up fails clearly on a model directory without a model", async () => {
  const empty = mkdtempSync(join(tmpdir(), "sppo-generator-empty-"));
  try {
    await assert.rejects(
      createGeneratorService({ generator: generatorConfigSchema.parse({ modelDir: empty, engine: "auto" }) }),
      (err: unknown) => RpcError.is(err, "model-format") && /^generator\.modelDir: .* holds no config\.json/.test(err.message),
    );
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});
