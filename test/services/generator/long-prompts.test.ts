/**
 * Prompts and responses longer than the policy's context, over real gRPC on loopback: each such request is answered
 * INVALID_ARGUMENT naming the field and the lengths, and the stream goes on serving the requests after it.
 * Run: node --import tsx --test test/services/generator/long-prompts.test.ts
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { FinishReason, type GenerateRequestSchema, type GenerateResponse, type Generator, type ScoreRequestSchema, type ScoreResponse } from "../../../gen/sppo/v1/generator_pb.js";
import { generatorConfigSchema } from "../../../lib/config/generator.js";
import { Code } from "../../../lib/errors.js";
import type { Client } from "../../../lib/grpc/client.js";
import { CONTEXT, type ServedGenerator, serveGenerator, writeTinyPolicy } from "./fixtures.js";

type GenInit = MessageInitShape<typeof GenerateRequestSchema>;
type ScoreInit = MessageInitShape<typeof ScoreRequestSchema>;

let root: string;
let generator: ServedGenerator;
let client: Client<typeof Generator>;

before(async () => {
  root = mkdtempSync(join(tmpdir(), "sppo-generator-long-"));
  writeTinyPolicy(join(root, "base"), 1);
  generator = await serveGenerator({ generator: generatorConfigSchema.parse({ modelDir: join(root, "base"), engine: "tfjs", tfjsBackend: "cpu" }) });
  client = generator.client;
});

after(async () => {
  await generator.stop();
  rmSync(root, { recursive: true, force: true });
});

/** `n` words of the tiny vocabulary: n tokens raw, n + 2 with the chat template (BOS … <sep>). */
const words = (n: number) => Array.from({ length: n }, (_, i) => (i % 2 === 0 ? "cat" : "dog")).join(" ");

/**
 * Sends `requests` on one stream, each only after the previous one was answered (so every request after a bad one
 * really follows it), and returns the responses in order.
 */
async function oneByOne<Req extends { requestId?: string }, Res extends { requestId: string }>(
  call: (requests: AsyncIterable<Req>) => AsyncIterable<Res>,
  requests: Req[],
): Promise<Res[]> {
  const out: Res[] = [];
  let answered: () => void = () => {};
  async function* send() {
    for (const r of requests) {
      const next = new Promise<void>((resolve) => {
        answered = resolve;
      });
      yield r;
      await next;
    }
  }
  for await (const r of call(send())) {
    out.push(r);
    answered();
  }
  assert.deepEqual(
    out.map((r) => r.requestId),
    requests.map((r) => r.requestId),
  );
  return out;
}

function assertInvalid(response: { error?: { code: number; field: string; message: string } }, field: string, message: RegExp): void {
  assert.equal(response.error?.code, Code.INVALID_ARGUMENT, response.error?.message);
  assert.equal(response.error?.field, field);
  assert.match(response.error?.message ?? "", message);
}

test("Generate: a prompt (text or token ids) that leaves no room in the context is INVALID_ARGUMENT; the stream goes on", async () => {
  const good = (id: string): GenInit => ({ requestId: id, prompt: "the cat", numSamples: 2, params: { seed: 3n, maxNewTokens: 4 } });
  const [longText, ok1, fullIds, ok2, rawText, ok3, edge] = await oneByOne<GenInit, GenerateResponse>(
    (r) => client.generate(r),
    [
      { requestId: "long-text", prompt: words(40), numSamples: 2 },
      good("ok1"),
      { requestId: "full-ids", promptTokenIds: Array.from({ length: CONTEXT }, () => 5), numSamples: 1 },
      good("ok2"),
      { requestId: "raw-text", prompt: words(CONTEXT), raw: true, numSamples: 1 },
      good("ok3"),
      // One token short of the context: accepted, and max_new_tokens is cut to the one token left.
      { requestId: "edge", prompt: words(CONTEXT - 3), numSamples: 1, params: { seed: 1n, maxNewTokens: 8, stopOnEos: false } },
    ],
  );
  assertInvalid(longText, "prompt", /^prompt: 42 tokens, but the policy's context is 32 tokens and at least one must be left for the response \(at most 31 prompt tokens\)$/);
  assertInvalid(fullIds, "prompt_token_ids", /^prompt_token_ids: 32 tokens, but the policy's context is 32 tokens/);
  // Raw: no chat template, but the BOS the tokenizer prepends counts.
  assertInvalid(rawText, "prompt", /^prompt: 33 tokens, but the policy's context is 32 tokens/);
  for (const r of [ok1, ok2, ok3]) {
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(r.candidates.length, 2);
  }
  assert.equal(edge.error, undefined, edge.error?.message);
  assert.equal(edge.promptTokenIds.length, CONTEXT - 1);
  assert.equal(edge.candidates[0].tokenIds.length, 1);
  assert.equal(edge.candidates[0].finishReason, FinishReason.LENGTH);
});

test("Score: a prompt or prompt + response past the context is INVALID_ARGUMENT naming the field; the stream goes on", async () => {
  const good = (id: string): ScoreInit => ({ requestId: id, prompt: "the cat", responseTexts: ["the dog is kind"] });
  const [longPrompt, ok1, longIds, ok2, longText, ok3] = await oneByOne<ScoreInit, ScoreResponse>(
    (r) => client.score(r),
    [
      { requestId: "long-prompt", prompt: words(40), responseTexts: ["the dog"] },
      good("ok1"),
      { requestId: "long-ids", promptTokenIds: Array.from({ length: 20 }, () => 5), responses: [{ tokenIds: [6] }, { tokenIds: Array.from({ length: 13 }, () => 6) }] },
      good("ok2"),
      // 20 words + BOS and <sep> = 22 prompt tokens; 10 words + EOS = 11 response tokens.
      { requestId: "long-text", prompt: words(20), responseTexts: [words(10)] },
      good("ok3"),
    ],
  );
  assertInvalid(longPrompt, "prompt", /^prompt: 42 tokens exceed the policy's context of 32 tokens$/);
  assertInvalid(longIds, "responses[1].token_ids", /^responses\[1\]\.token_ids: prompt \(20\) \+ response \(13\) = 33 tokens exceed the policy's context of 32$/);
  assertInvalid(longText, "response_texts[0]", /^response_texts\[0\]: prompt \(22\) \+ response \(11\) = 33 tokens exceed the policy's context of 32$/);
  for (const r of [ok1, ok2, ok3]) {
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(r.logprobs.length, 1);
  }
});
