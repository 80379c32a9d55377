/**
 * WorkerPolicy: an OrtPolicy run in a worker thread gives exactly the main-thread policy's samples and scores,
 * refreshes to a new directory, shares its thread with the process's other worker policies, rebuilds errors as their own class (RangeError for a bad id, a "model-format"
 * RpcError for a bad directory).
 * Run: node --import tsx --test test/models/onnx/worker-policy.test.ts
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { RpcError } from "../../../lib/errors.js";
import { createOrtPolicy } from "../../../models/onnx/index.js";
import { createWorkerPolicy } from "../../../models/onnx/worker-policy.js";
import { FIXTURES } from "../helpers.js";

const work = mkdtempSync(join(tmpdir(), "sppo-worker-policy-"));
after(() => rmSync(work, { recursive: true, force: true }));

const PROMPTS = [[0, 5, 7], [0, 9], [0, 3, 4, 8, 2, 6]];
const PAIRS = [
  { prompt: [0, 5, 7], response: [9, 11, 3, 1] },
  { prompt: [0, 2], response: [13, 1] },
];

describe("WorkerPolicy", () => {
  it("samples and scores exactly as the policy on the main thread, and refreshes", async () => {
    const options = { intraOpThreads: 1, prepare: ["sample", "score"] as const };
    const local = await createOrtPolicy(join(FIXTURES, "gpt2"), options);
    const remote = await createWorkerPolicy(join(FIXTURES, "gpt2"), options);
    try {
      assert.deepEqual(remote.config, local.config);
      assert.equal(remote.parameters, local.parameters);
      const sampling = { seed: 4, maxNewTokens: 8, temperature: 0.8, eosId: 1 };
      assert.deepEqual(await remote.sample(PROMPTS, sampling), await local.sample(PROMPTS, sampling));
      assert.deepEqual(await remote.score(PAIRS), await local.score(PAIRS));

      const timing = await remote.refresh(join(FIXTURES, "llama"));
      assert.ok(timing.totalMs > 0);
      assert.equal(remote.config.model_type, "llama");
      const llama = await createOrtPolicy(join(FIXTURES, "llama"), options);
      assert.deepEqual(await remote.score(PAIRS), await llama.score(PAIRS));
      // A second policy shares the worker; disposing it leaves the first one serving.
      const second = await createWorkerPolicy(join(FIXTURES, "gpt2"), options);
      assert.deepEqual(await second.score(PAIRS), await local.score(PAIRS));
      await second.dispose();
      assert.deepEqual(await remote.score(PAIRS), await llama.score(PAIRS));
      await llama.dispose();
    } finally {
      await local.dispose();
      await remote.dispose();
    }
    await assert.rejects(remote.score(PAIRS), /after dispose/);
  });

  it("a worker's errors arrive as their own class, and a bad directory fails the creation", async () => {
    const policy = await createWorkerPolicy(join(FIXTURES, "gpt2"), { intraOpThreads: 1, prepare: ["score"] });
    try {
      await assert.rejects(policy.score([{ prompt: [0, 9999], response: [1] }]), (err: Error) => err instanceof RangeError && /token id 9999 is outside the vocabulary/.test(err.message));
      assert.equal((await policy.score(PAIRS)).length, 2, "the policy serves on after a refused call");
    } finally {
      await policy.dispose();
    }
    const broken = join(work, "broken");
    rmSync(broken, { recursive: true, force: true });
    mkdirSync(broken);
    writeFileSync(join(broken, "config.json"), JSON.stringify({ model_type: "bert" }));
    await assert.rejects(createWorkerPolicy(broken), (err: unknown) => RpcError.is(err, "model-format") && /model_type "bert" is not supported/.test((err as Error).message));
  });
});
