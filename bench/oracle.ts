/**
 * Oracle benchmark: pairs/s through the PreferenceOracle gRPC service (tokenizing, dynamic batching, matrix
 * assembly and checks, protobuf over a local bidi stream) against the same ONNX session run directly on
 * pre-tokenized, pre-padded batches of the same size — the service's overhead ratio (target ≤ 10%).
 *
 *   node --import tsx bench/oracle.ts [--quick]       (prints one JSON row per line)
 *
 * Two models, both built by the project's code: the embedded default model (a few hundred FLOPs per token, so
 * the ratio shows the service's fixed costs) and a constructed compute-bound model (token MLP d=256 → 1024 → 256 with
 * seeded random weights), whose cost per pair is closer to a real pairwise reward model; the ≤ 10% target is about
 * the latter. Direct and service runs alternate and the medians are reported, so both see the same machine load.
 */

import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import * as ort from "onnxruntime-node";
import { PreferenceOracle } from "../gen/sppo/v1/oracle_pb.js";
import { oracleConfigSchema } from "../lib/config/oracle.js";
import { serverConfigSchema } from "../lib/config/server.js";
import { BAD, GOOD, NEUTRAL, PROMPT_TEMPLATES, RESPONSE_TEMPLATES, SUBJECTS } from "../lib/default-task/language.js";
import { createClient, mount, serve } from "../lib/grpc/index.js";
import { DataType, GraphBuilder, serializeModel } from "../lib/onnx/index.js";
import { defaultVocabulary, writeOracleDir } from "../scripts/make-default-oracle.js";
import { padBatch } from "../services/oracle/model-dir.js";
import { PairwiseOnnxOracle, pairwiseRows } from "../services/oracle/pairwise-onnx.js";
import { createOracleService } from "../services/oracle/server.js";
import type { BenchRow } from "./row.js";

export interface OracleBenchOptions {
  /** Fewer requests and repeats (for smoke runs). @default false */
  quick?: boolean;
  /** Candidates per request. @default 5 (the paper's K) */
  k?: number;
  /** Rows per ONNX run, in both paths. @default 64 */
  maxBatch?: number;
}

/** Deterministic requests in the default task's language (a small LCG, no Math.random). */
export function makeRequests(count: number, k: number): { prompt: string; candidates: string[] }[] {
  let state = 12345;
  const next = (n: number) => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return (state >>> 8) % n;
  };
  const adjectives = [...GOOD, ...BAD, ...NEUTRAL];
  const pick = <T>(list: readonly T[]) => list[next(list.length)];
  return Array.from({ length: count }, () => {
    const subject = pick(SUBJECTS);
    const prompt = pick(PROMPT_TEMPLATES).replace("{s}", subject);
    const candidates = Array.from({ length: k }, () =>
      pick(RESPONSE_TEMPLATES).replace("{s}", subject).replace("{a}", pick(adjectives)).replace("{b}", pick(adjectives)).replace("{c}", pick(adjectives)),
    );
    return { prompt, candidates };
  });
}

/** A compute-bound pairwise model: per-token MLP d → ff → d, segment sums, logit = w·(f1 − f2). Seeded weights. */
export function writeHeavyModel(dir: string, d = 256, ff = 1024): void {
  writeOracleDir(dir, "pairwise");
  const vocabulary = defaultVocabulary();
  let seed = 7;
  const random = (n: number, scale: number) =>
    Float32Array.from({ length: n }, () => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return (seed / 2 ** 32 - 0.5) * 2 * scale;
    });
  const g = new GraphBuilder({ name: "bench_heavy_pairwise" });
  const ids = g.input("input_ids", DataType.INT64, ["batch", "length"]);
  const mask = g.cast(g.input("attention_mask", DataType.INT64, ["batch", "length"]), DataType.FLOAT); // (B, L)
  const emb = g.gather(g.initializer("wte", random(vocabulary.length * d, 1), [vocabulary.length, d]), ids); // (B, L, d)
  const h = g.relu(g.matMul(emb, g.initializer("fc_in", random(d * ff, 1 / Math.sqrt(d)), [d, ff]))); // (B, L, ff)
  const x = g.matMul(h, g.initializer("fc_out", random(ff * d, 1 / Math.sqrt(ff)), [ff, d])); // (B, L, d)
  const marker = (token: string) => g.cumSum(g.cast(g.equal(ids, g.constInt64(vocabulary.indexOf(token))), DataType.FLOAT), 1);
  const after1 = marker("<|candidate1|>");
  const after2 = marker("<|candidate2|>");
  const pool = (segment: string) => g.squeeze(g.matMul(g.unsqueeze(g.mul(segment, mask), [1]), x), [1]); // (B, d)
  const diff = g.sub(pool(g.sub(after1, after2)), pool(after2)); // (B, d)
  const logits = g.squeeze(g.matMul(diff, g.initializer("head", random(d, 0.01), [d, 1])), [1]); // (B)
  g.output("logits", DataType.FLOAT, ["batch"], logits);
  writeFileSync(join(dir, "model.onnx"), serializeModel(g.build()));
}

interface Measured {
  wallS: number;
  /** User + system CPU seconds of this process (all threads). */
  cpuS: number;
}

async function measure(work: () => Promise<void>): Promise<Measured> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await work();
  const cpu = process.cpuUsage(cpu0);
  return { wallS: (performance.now() - t0) / 1000, cpuS: (cpu.user + cpu.system) / 1e6 };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

async function benchModel(
  name: string,
  dir: string,
  requests: { prompt: string; candidates: string[] }[],
  repeats: number,
  warmups: number,
  maxBatch: number,
): Promise<BenchRow[]> {
  const batching = { maxBatch, maxWaitMs: 2, maxConcurrentRuns: 1 };
  // Direct: the same session settings, the rows tokenized and padded beforehand, batches of maxBatch run in turn.
  const tokenizerSide = await PairwiseOnnxOracle.load({ modelDir: dir, maxCandidates: 64, batching, intraOpThreads: 0 });
  const allRows = requests.flatMap((r) => pairwiseRows(tokenizerSide.encoder, tokenizerSide.config, r.prompt, r.candidates).rows);
  await tokenizerSide.close();
  // The baseline: onnxruntime on this thread, no worker, inputs ready.
  const session = await ort.InferenceSession.create(join(dir, "model.onnx"), { graphOptimizationLevel: "all" });
  const batches: { input_ids: ort.Tensor; attention_mask: ort.Tensor }[] = [];
  for (let at = 0; at < allRows.length; at += maxBatch) {
    const { ids, mask, dims } = padBatch(allRows.slice(at, at + maxBatch), 0);
    batches.push({ input_ids: new ort.Tensor("int64", ids, dims), attention_mask: new ort.Tensor("int64", mask, dims) });
  }
  const runDirect = () =>
    measure(async () => {
      for (const feeds of batches) await session.run(feeds);
    });

  const service = await createOracleService({ oracle: oracleConfigSchema.parse({ modelDir: dir, maxCandidates: 64, batching }) });
  const running = await serve({
    name: "oracle-bench",
    services: [mount(PreferenceOracle, service.implementation)],
    config: { ...serverConfigSchema.parse({ host: "127.0.0.1", port: 0, metricsPort: -1, drainDelayMs: 0 }), port: 0 },
  });
  // The client runs in its own thread, as the pipeline runs in its own process: the service's thread does only the
  // service's work.
  // This file is TypeScript: the worker registers tsx first (as bin/sppo.mjs does), then loads it.
  const bootstrap = `(async () => {
    const { register } = await import(${JSON.stringify(import.meta.resolve("tsx/esm/api"))});
    register();
    await import(${JSON.stringify(import.meta.url)});
  })();`;
  const client = new Worker(bootstrap, { eval: true, workerData: { role: CLIENT_ROLE, target: `127.0.0.1:${running.port}`, requests } });
  await once(client, "message"); // ready
  const runService = () =>
    measure(async () => {
      client.postMessage("run");
      const [reply] = (await once(client, "message")) as [{ answered?: number; error?: string }];
      if (reply.error) throw new Error(`bench client: ${reply.error}`);
      if (reply.answered !== requests.length) throw new Error(`bench: ${reply.answered} of ${requests.length} answered`);
    });

  try {
    // JIT, allocator and connection warm-up: the service path (tokenizer, protobuf, grpc-js) needs many rounds
    // before it runs at its steady speed; at least `warmups` rounds and one second of each.
    for (let round = 0, spent = 0; round < warmups || spent < 1; round++) {
      spent += (await runDirect()).wallS;
      await runService();
    }
    const direct: Measured[] = [];
    const served: Measured[] = [];
    for (let r = 0; r < repeats; r++) {
      direct.push(await runDirect());
      served.push(await runService());
    }
    const pairs = allRows.length;
    const directRate = pairs / median(direct.map((m) => m.wallS));
    const serviceRate = pairs / median(served.map((m) => m.wallS));
    const directCpu = median(direct.map((m) => m.cpuS));
    const serviceCpu = median(served.map((m) => m.cpuS));
    const common = { model: name, pairs, requests: requests.length, k: requests[0].candidates.length, maxBatch, repeats };
    return [
      { metric: "oracle.direct_pairs_per_s", value: directRate, unit: "pairs/s", ...common },
      { metric: "oracle.service_pairs_per_s", value: serviceRate, unit: "pairs/s", ...common },
      { metric: "oracle.service_overhead", value: directRate / serviceRate - 1, unit: "ratio", target: 0.1, basis: "wall clock", ...common },
      // CPU seconds of the whole process (ONNX threads included; the in-process gRPC client too, so an upper bound):
      // steadier than wall time when other work shares the machine.
      { metric: "oracle.service_overhead_cpu", value: serviceCpu / directCpu - 1, unit: "ratio", target: 0.1, basis: "process CPU time", ...common },
    ];
  } finally {
    await client.terminate();
    await running.shutdown(1_000);
    await service.close();
    await session.release();
  }
}

/** Runs the oracle benchmark; returns one row per metric and model. */
export async function oracleBench(options: OracleBenchOptions = {}): Promise<BenchRow[]> {
  const k = options.k ?? 5;
  const maxBatch = options.maxBatch ?? 64;
  const repeats = options.quick ? 5 : 9;
  const dir = mkdtempSync(join(tmpdir(), "sppo-oracle-bench-"));
  try {
    const defaultDir = join(dir, "default");
    writeOracleDir(defaultDir, "pairwise");
    const heavyDir = join(dir, "heavy");
    writeHeavyModel(heavyDir);
    return [
      ...(await benchModel("default (assets/oracle form)", defaultDir, makeRequests(options.quick ? 64 : 256, k), repeats, 10, maxBatch)),
      ...(await benchModel("compute-bound MLP d=256 ff=1024", heavyDir, makeRequests(options.quick ? 32 : 64, k), repeats, 2, maxBatch)),
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export default oracleBench;

const CLIENT_ROLE = "oracle-bench-client";

/** The bench's client thread: on each "run" message, sends every request on one Compare stream and counts answers. */
async function clientThread(data: { target: string; requests: { prompt: string; candidates: string[] }[] }): Promise<void> {
  const client = createClient(PreferenceOracle, data.target);
  parentPort!.on("message", async () => {
    try {
      let answered = 0;
      for await (const response of client.compare(data.requests.map((r, i) => ({ requestId: String(i), ...r })))) {
        if (response.error) throw new Error(`request ${response.requestId} failed: ${response.error.message}`);
        answered++;
      }
      parentPort!.postMessage({ answered });
    } catch (err) {
      parentPort!.postMessage({ error: (err as Error).message });
    }
  });
  parentPort!.postMessage("ready");
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === CLIENT_ROLE) {
  await clientThread(workerData);
} else if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  for (const row of await oracleBench({ quick: process.argv.includes("--quick") })) process.stdout.write(`${JSON.stringify(row)}\n`);
}
