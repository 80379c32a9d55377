/**
 * Shared by the oracle tests: model directories built by the project's own code in temp dirs, an independent
 * hand computation of the constructed models' arithmetic, and a gRPC server on 127.0.0.1:0.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PreferenceOracle } from "../../../gen/sppo/v1/oracle_pb.js";
import { oracleConfigSchema, type OracleConfig } from "../../../lib/config/oracle.js";
import { serverConfigSchema } from "../../../lib/config/server.js";
import { type Client, createClient, mount, type RunningServer, serve } from "../../../lib/grpc/index.js";
import { DataType, GraphBuilder, serializeModel } from "../../../lib/onnx/index.js";
import { buildTokenizerJson, defaultVocabulary, type ScoreWeights, writeOracleDir } from "../../../scripts/make-default-oracle.js";
import { oracleImplementation } from "../../../services/oracle/server.js";
import type { Oracle } from "../../../services/oracle/oracle.js";

export function tempDir(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), "sppo-oracle-"));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A model dir made by scripts/make-default-oracle.ts. */
export function modelDir(parent: string, name: string, kind: "pairwise" | "reward", options: { weights?: ScoreWeights; config?: Record<string, unknown> } = {}): string {
  const dir = join(parent, name);
  writeOracleDir(dir, kind, options);
  return dir;
}

/**
 * A pairwise model that outputs NaN for every row containing the word "grim" and 0.5·(#tokens of row) otherwise,
 * with the default tokenizer.
 */
export function nanModelDir(parent: string): string {
  const dir = join(parent, "nan-model");
  const vocabulary = defaultVocabulary();
  const g = new GraphBuilder({ name: "nan_on_grim" });
  const ids = g.input("input_ids", DataType.INT64, ["batch", "length"]);
  const mask = g.cast(g.input("attention_mask", DataType.INT64, ["batch", "length"]), DataType.FLOAT);
  const grim = g.reduceSum(g.cast(g.equal(ids, g.constInt64(vocabulary.indexOf("grim"))), DataType.FLOAT), [1]); // (B)
  const length = g.mul(g.reduceSum(mask, [1]), g.constFloat(0.5)); // (B)
  const hasGrim = g.node("Greater", [grim, g.constFloat(0)]);
  g.output("logits", DataType.FLOAT, ["batch"], g.where(hasGrim, g.constFloat(Number.NaN), length));
  writeModel(dir, serializeModel(g.build()));
  return dir;
}

/** Writes model bytes with the default tokenizer (and an oracle_config.json when given). */
export function writeModel(dir: string, bytes: Uint8Array, config?: Record<string, unknown>): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "model.onnx"), bytes);
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(buildTokenizerJson()));
  if (config) writeFileSync(join(dir, "oracle_config.json"), JSON.stringify(config));
}

// ---- Independent arithmetic of the constructed models, from the word lists as written in the task's language ----

const GOOD_WORDS = "kind bright helpful calm gentle clear warm honest brave lovely".split(" ");
const BAD_WORDS = "rude dull broken noisy cold vague angry ugly lazy grim".split(" ");
const SUBJECT_WORDS =
  "cat dog river city garden robot book storm teacher friend forest house song ship market school bird mountain village train".split(" ");

/** score(y | x) of the constructed models, computed by hand from the words. */
export function handScore(prompt: string, response: string, w: ScoreWeights): number {
  const words = (t: string) => t.toLowerCase().split(/[^a-z]+/).filter(Boolean);
  const promptSubjects = new Set(words(prompt).filter((x) => SUBJECT_WORDS.includes(x)));
  const r = words(response);
  const named = new Set(r.filter((x) => SUBJECT_WORDS.includes(x)));
  const on = [...named].filter((s) => promptSubjects.has(s)).length;
  const good = r.filter((x) => GOOD_WORDS.includes(x)).length;
  const bad = r.filter((x) => BAD_WORDS.includes(x)).length;
  return w.good * good - w.bad * bad + w.onSubject * on - w.offSubject * (named.size - on);
}

/** σ(s_i − s_j) with P_ii = 1/2: what both constructed models must give (the pairwise one after bias cancels). */
export function expectedMatrix(prompt: string, candidates: readonly string[], w: ScoreWeights): number[][] {
  const s = candidates.map((c) => handScore(prompt, c, w));
  return s.map((si, i) => s.map((sj, j) => (i === j ? 0.5 : 1 / (1 + Math.exp(-(si - sj))))));
}

export function assertMatrixClose(actual: readonly (readonly number[])[], expected: readonly (readonly number[])[], tolerance = 1e-5): void {
  if (actual.length !== expected.length) throw new Error(`matrix has ${actual.length} rows, expected ${expected.length}`);
  for (let i = 0; i < expected.length; i++) {
    for (let j = 0; j < expected.length; j++) {
      if (!(Math.abs(actual[i][j] - expected[i][j]) <= tolerance)) {
        throw new Error(`P[${i}][${j}] = ${actual[i][j]}, expected ${expected[i][j]} (±${tolerance})`);
      }
    }
  }
}

export function oracleConfig(overrides: Record<string, unknown>): OracleConfig {
  return oracleConfigSchema.parse(overrides);
}

/** Serves `oracle` on 127.0.0.1:0 and returns a client for it. */
export async function serveOracle(oracle: Oracle): Promise<{ running: RunningServer; client: Client<typeof PreferenceOracle>; stop(): Promise<void> }> {
  const running = await serve({
    name: "oracle-test",
    services: [mount(PreferenceOracle, oracleImplementation(oracle))],
    config: { ...serverConfigSchema.parse({ host: "127.0.0.1", port: 0, metricsPort: -1, drainDelayMs: 0 }), port: 0 },
  });
  const client = createClient(PreferenceOracle, `127.0.0.1:${running.port}`, {});
  return {
    running,
    client,
    async stop() {
      client.close();
      await running.shutdown(1_000);
    },
  };
}
