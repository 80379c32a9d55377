/**
 * Bad input (issue 8), the cases not already covered elsewhere: each fails with an error that names what was wrong
 * and where, and the services keep serving.
 * - An oracle that answers the wrong shape, NaN, an inconsistent matrix or a per-request error, seen by the loop's
 *   compare stage over a real loopback gRPC server and the loop's multiplexer: the error names the prompt.
 * - A message over the size limit sent to the real oracle service: RESOURCE_EXHAUSTED naming the method and both
 *   sizes, and the next call is answered.
 * - A policy-version mismatch at the optimizer: an IterationStart whose base_version is not the latest published
 *   version is FAILED_PRECONDITION naming both versions, and the trainer then takes the right one.
 * - `sppo run` with a broken prompt file, an empty one, one with invalid UTF-8, or an invalid config: one line on
 *   stderr naming the file and line (or field), exit code 1.
 * Run: node --import tsx --test test/faults/bad-input.test.ts
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { from, lastValueFrom, toArray } from "rxjs";
import { CandidateSchema } from "../../gen/sppo/v1/generator_pb.js";
import { type CompareRequest, CompareRequestSchema, type CompareResponse, CompareResponseSchema, PreferenceOracle } from "../../gen/sppo/v1/oracle_pb.js";
import { oracleConfigSchema } from "../../lib/config/oracle.js";
import { Code, RpcError } from "../../lib/errors.js";
import { type Client, createClient } from "../../lib/grpc/client.js";
import { isItemRefusal } from "../../lib/grpc/codes.js";
import { mount, type RunningServer } from "../../lib/grpc/serve.js";
import { compareCandidates } from "../../pipeline/compare-candidates.js";
import { createMultiplexer, type Multiplexer } from "../../lib/grpc/multiplexer.js";
import type { CandidateSet, ComparedSet } from "../../pipeline/types.js";
import { Trainer } from "../../services/optimizer/trainer.js";
import { createOracleService } from "../../services/oracle/server.js";
import { serveForTest } from "../lib/grpc/harness.js";
import { configAt, makeBaseModel, startMsg } from "../services/optimizer/fixtures.js";

const root = new URL("../../", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "sppo-bad-input-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** What the misbehaving oracle answers, chosen by the request's prompt. */
type Answer = { k?: number; probabilities?: number[]; error?: { code: Code; message: string; field: string } };
const ANSWERS: Record<string, () => Answer> = {
  good: () => ({ k: 2, probabilities: [0.5, 0.75, 0.25, 0.5] }),
  "wrong-k": () => ({ k: 3, probabilities: [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5] }),
  "too-few": () => ({ k: 2, probabilities: [0.5, 0.5, 0.5] }),
  nan: () => ({ k: 2, probabilities: [0.5, Number.NaN, Number.NaN, 0.5] }),
  infinite: () => ({ k: 2, probabilities: [0.5, Number.POSITIVE_INFINITY, 0, 0.5] }),
  "not-constant-sum": () => ({ k: 2, probabilities: [0.5, 0.7, 0.7, 0.5] }),
  "bad-diagonal": () => ({ k: 2, probabilities: [0.4, 0.5, 0.5, 0.5] }),
  // What services/oracle answers when its model produced NaN (test/services/oracle/server.test.ts).
  "model-nan": () => ({ error: { code: Code.INTERNAL, message: "P[0][1] = NaN is not finite (the model's output was not a number)", field: "" } }),
  // A refusal of the item itself: the loop drops the prompt and goes on.
  refused: () => ({ error: { code: Code.INVALID_ARGUMENT, message: "is empty", field: "candidates[1]" } }),
};

/** A CandidateSet for the prompt `kind` (the oracle above answers by it), with the id a prompt file would give. */
function candidateSet(kind: string, line: number): CandidateSet {
  return {
    prompt: { id: `prompts.jsonl:${line}`, prompt: kind },
    promptTokenIds: [1, 2],
    candidates: ["a good cat", "a bad dog"].map((text, index) => create(CandidateSchema, { index, tokenIds: [10 + index], text, logprob: -1 })),
    policyVersion: 0,
  };
}

describe("the loop's compare stage against an oracle that answers badly (loopback gRPC, the loop's multiplexer)", () => {
  let server: RunningServer;
  let client: Client<typeof PreferenceOracle>;
  let oracle: Multiplexer<CompareRequest, CompareResponse>;
  before(async () => {
    server = await serveForTest([
      mount(PreferenceOracle, {
        async describe() {
          return { backend: "misbehaving", maxCandidates: 8 };
        },
        async *compare(requests) {
          for await (const r of requests) {
            const answer = ANSWERS[r.prompt];
            yield create(CompareResponseSchema, { requestId: r.requestId, ...(answer?.() ?? { error: { code: Code.INVALID_ARGUMENT, message: `unknown test prompt ${r.prompt}`, field: "prompt" } }) });
          }
        },
      }),
    ]);
    client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`);
    // As pipeline/loop.ts makes it: one long-lived Compare stream shared by every request.
    oracle = createMultiplexer((requests, signal) => client.compare(requests, { signal }), { name: "oracle" });
  });
  after(async () => {
    oracle.close();
    client.close();
    await server.shutdown(0);
  });

  const run = (sets: CandidateSet[], onSkip?: (set: CandidateSet, error: RpcError) => void): Promise<ComparedSet[]> =>
    lastValueFrom(from(sets).pipe(compareCandidates({ oracle, concurrency: 1, onSkip }), toArray()));

  /** The stage's stream, then one more request on the same multiplexer (the loop's stream still works). */
  async function assertFailsNaming(kind: string, pattern: RegExp): Promise<void> {
    await assert.rejects(run([candidateSet("good", 1), candidateSet(kind, 7)]), (err: Error) => {
      assert.match(err.message, /^oracle answer for prompt prompts\.jsonl:7/, `${kind}: ${err.message}`);
      assert.match(err.message, pattern, kind);
      // Not a per-item refusal: pipeline/skip-bad-input.ts lets it end the run instead of dropping the prompt.
      assert.ok(!(err instanceof RpcError && isItemRefusal(err.code)), `${kind}: ${err.name}`);
      return true;
    });
    const after = await run([candidateSet("good", 9)]);
    assert.deepEqual(after[0].matrix, [
      [0.5, 0.75],
      [0.25, 0.5],
    ]);
  }

  it("a K×K matrix for another K, or too few values: the prompt, the shape and K named", async () => {
    await assertFailsNaming("wrong-k", /the oracle answered a 3×3 matrix with 9 values for 2 candidates/);
    await assertFailsNaming("too-few", /the oracle answered a 2×2 matrix with 3 values for 2 candidates/);
  });

  it("NaN or ±Infinity: the prompt, the entry and the value named (not 'null')", async () => {
    await assertFailsNaming("nan", /prompts\.jsonl:7: P\[0\]\[1\]: must be a probability in \[0, 1\], got NaN$/);
    await assertFailsNaming("infinite", /prompts\.jsonl:7: P\[0\]\[1\]: must be a probability in \[0, 1\], got Infinity$/);
  });

  it("a matrix that is not a preference matrix: the prompt and the entries named", async () => {
    await assertFailsNaming("not-constant-sum", /\[0\]\[1\] \+ .*\[1\]\[0\] must be 1 \(constant-sum\), got 0\.7 \+ 0\.7/);
    await assertFailsNaming("bad-diagonal", /\[0\]\[0\]: the diagonal must be 1\/2, got 0\.4/);
  });

  it("the oracle's INTERNAL for a NaN from its model ends the stage, naming the request (policy version/prompt)", async () => {
    await assert.rejects(run([candidateSet("good", 1), candidateSet("model-nan", 4)]), (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, Code.INTERNAL);
      assert.equal(err.message, "oracle: request 0/prompts.jsonl:4: P[0][1] = NaN is not finite (the model's output was not a number)");
      return true;
    });
    assert.equal((await run([candidateSet("good", 5)])).length, 1);
  });

  it("a refusal of one item (INVALID_ARGUMENT) drops that prompt, reports it naming prompt and field, and goes on", async () => {
    const skipped: { id: string; error: RpcError }[] = [];
    const out = await run([candidateSet("good", 1), candidateSet("refused", 2), candidateSet("good", 3)], (set, error) => skipped.push({ id: set.prompt.id, error }));
    assert.deepEqual(
      out.map((s) => s.prompt.id),
      ["prompts.jsonl:1", "prompts.jsonl:3"],
    );
    assert.equal(skipped.length, 1);
    assert.equal(skipped[0].id, "prompts.jsonl:2");
    assert.equal(skipped[0].error.code, Code.INVALID_ARGUMENT);
    assert.equal(skipped[0].error.message, "oracle: request 0/prompts.jsonl:2 (field candidates[1]): is empty");
  });
});

describe("a message over the size limit, sent to the real oracle service", () => {
  it("is RESOURCE_EXHAUSTED naming the method and both sizes; the next call is answered", async () => {
    const service = await createOracleService({ oracle: oracleConfigSchema.parse({ backend: "synthetic-adjectives" }) });
    const server = await serveForTest([mount(PreferenceOracle, service.implementation)], { maxMessageBytes: 2048 });
    // The client's own limit is higher, so the message reaches the server and the server refuses it.
    const client = createClient(PreferenceOracle, `127.0.0.1:${server.port}`, { maxMessageBytes: 1 << 20 });
    try {
      const compare = async (requests: { requestId: string; prompt: string; candidates: string[] }[]) => {
        const out: CompareResponse[] = [];
        for await (const r of client.compare(requests.map((m) => create(CompareRequestSchema, m)))) out.push(r);
        return out;
      };
      await assert.rejects(compare([{ requestId: "big", prompt: "describe the cat", candidates: ["a good cat ".repeat(400), "a bad dog"] }]), (err: unknown) => {
        assert.ok(err instanceof RpcError);
        assert.equal(err.code, Code.RESOURCE_EXHAUSTED);
        assert.match(err.message, /^\/sppo\.v1\.PreferenceOracle\/Compare: .*larger than max \(\d{4,} vs\.? 2048\)/);
        return true;
      });
      const answers = await compare([{ requestId: "next", prompt: "describe the cat", candidates: ["a good cat", "a bad dog"] }]);
      assert.equal(answers.length, 1);
      assert.equal(answers[0].error, undefined);
      assert.equal(answers[0].probabilities.length, 4);
    } finally {
      client.close();
      await server.shutdown(0);
      await service.close();
    }
  });
});

describe("a policy-version mismatch at the optimizer", () => {
  it("an IterationStart on another base version is FAILED_PRECONDITION naming both; the right one is then accepted", () => {
    const root = makeBaseModel();
    const trainer = Trainer.open(configAt(root));
    try {
      assert.throws(
        () => trainer.start({ ...startMsg(1), baseVersion: 3 }),
        (err: unknown) => err instanceof RpcError && err.code === Code.FAILED_PRECONDITION && /^start\.base_version 3 is not the latest policy version 0\b/.test(err.message),
      );
      assert.deepEqual(trainer.start(startMsg(1)), []);
      assert.equal(trainer.currentIteration(), 1);
    } finally {
      trainer.dispose();
      rmSync(root, { recursive: true, force: true });
    }
  });
});

/** `sppo run --config FILE`; resolves with its exit code and output. */
async function sppoRun(config: Record<string, unknown>, name: string): Promise<{ code: number | null; stderr: string }> {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config));
  const child = spawn(process.execPath, ["bin/sppo.mjs", "run", "--config", file, "--out", join(dir, `out-${name}`)], {
    cwd: root,
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, SPPO_LOG_LEVEL: "error" },
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const [code] = await once(child, "exit");
  return { code, stderr };
}

/** The embedded default task, small and quiet, on `prompts`. */
const task = (prompts: string) => ({
  server: { metricsPort: -1 },
  generator: { modelDir: "assets/policy" },
  oracle: { backend: "synthetic-adjectives" },
  optimizer: { modelDir: "assets/policy" },
  pipeline: { prompts, iterations: 1, evalPrompts: 1, telemetryPort: -1, progress: false },
});

/** The last line `sppo` printed: one line, no stack. */
function lastLine(stderr: string): string {
  const lines = stderr.trim().split("\n");
  const last = lines.at(-1) ?? "";
  assert.ok(!/^\s+at /m.test(stderr), `a stack trace was printed:\n${stderr}`);
  return last;
}

describe("sppo run with bad prompt files or config: one line naming the file and line, exit code 1", { timeout: 180_000 }, () => {
  it("a prompt file with a broken line", async () => {
    const prompts = join(dir, "broken.jsonl");
    writeFileSync(prompts, '{"prompt": "describe the cat"}\n{"prompt": "describe the dog"}\n{"prompt": "half\n{"prompt": "describe the sun"}\n');
    const { code, stderr } = await sppoRun(task(prompts), "broken");
    assert.equal(code, 1, stderr);
    assert.match(lastLine(stderr), new RegExp(`^sppo: ${escapeRegExp(prompts)}:3: not valid JSON: `));
  });

  it("an empty prompt set", async () => {
    const prompts = join(dir, "empty.jsonl");
    writeFileSync(prompts, "\n  \n");
    const { code, stderr } = await sppoRun(task(prompts), "empty");
    assert.equal(code, 1, stderr);
    assert.equal(lastLine(stderr), `sppo: ${prompts}: the prompt set is empty`);
  });

  it("a prompt file with invalid UTF-8", async () => {
    const prompts = join(dir, "latin1.jsonl");
    writeFileSync(prompts, Buffer.concat([Buffer.from('{"prompt": "describe the cat"}\n{"prompt": "describe the caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]));
    const { code, stderr } = await sppoRun(task(prompts), "latin1");
    assert.equal(code, 1, stderr);
    assert.equal(lastLine(stderr), `sppo: ${prompts}:2: not valid UTF-8`);
  });

  it("an invalid config (pipeline section): the file, the field and the reason", async () => {
    const config = task("assets/prompts/default.jsonl");
    const bad = { ...config, pipeline: { ...config.pipeline, samplesPerPrompt: 1 } };
    const file = join(dir, "bad-config.json");
    const { code, stderr } = await sppoRun(bad, "bad-config");
    assert.equal(code, 1, stderr);
    assert.match(lastLine(stderr), new RegExp(`^sppo: config file ${escapeRegExp(file)}: field pipeline\\.samplesPerPrompt: `));
  });
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
