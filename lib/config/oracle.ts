import { z } from "zod";

/** Backends of the preference oracle (services/oracle). */
export const ORACLE_BACKENDS = [
  /** A PairRM-compatible pairwise ONNX model: model.onnx + tokenizer.json (+ oracle_config.json) in `modelDir`. */
  "pairwise-onnx",
  /** A scalar reward ONNX model (Bradley-Terry): P_ij = σ(r_i − r_j). */
  "reward-onnx",
  /** Another PreferenceOracle service over gRPC, at `remote.target`. */
  "remote",
  /** Synthetic, transitive: counts GOOD/BAD adjectives of the default task's language. For tests and demos. */
  "synthetic-adjectives",
  /** Synthetic, intransitive: GOOD ≻ NEUTRAL ≻ BAD ≻ GOOD (rock-paper-scissors). For tests and demos. */
  "synthetic-intransitive",
] as const;

export type OracleBackend = (typeof ORACLE_BACKENDS)[number];

/** The preference oracle service (services/oracle): which judge, and how requests are batched. */
export const oracleConfigSchema = z
  .object({
    /** Which judge answers. @default "pairwise-onnx" (the embedded default model) */
    backend: z.enum(ORACLE_BACKENDS).default("pairwise-onnx"),
    /** Model directory of the ONNX backends (model.onnx, tokenizer.json, optional oracle_config.json). @default "assets/oracle" */
    modelDir: z.string().min(1).default("assets/oracle"),
    /** Requests waiting or running at once, over all streams; beyond this a request is answered RESOURCE_EXHAUSTED. @default 1024 */
    maxQueuedRequests: z.number().int().min(1).max(1_000_000).default(1024),
    /** Largest K (candidates per request) accepted. @default 16 */
    maxCandidates: z.number().int().min(2).max(1024).default(16),
    /** Dynamic batching of the ONNX backends: pairs (or responses) from concurrent requests share one model run. */
    batching: z
      .object({
        /** Rows per ONNX run (a pairwise row is one ordered pair; a reward row is one response). @default 64 */
        maxBatch: z.number().int().min(1).max(65_536).default(64),
        /** How long the first queued row waits for others before its batch runs, in ms (0: the same event-loop turn). @default 2 */
        maxWaitMs: z.number().min(0).max(10_000).default(2),
        /** ONNX runs in flight at once; rows queue (and batch up) while all are busy. @default 1 */
        maxConcurrentRuns: z.number().int().min(1).max(64).default(1),
      })
      .strict()
      .default({ maxBatch: 64, maxWaitMs: 2, maxConcurrentRuns: 1 }),
    /** onnxruntime threads per run; 0 lets onnxruntime choose (all cores). @default 0 */
    intraOpThreads: z.number().int().min(0).max(256).default(0),
    /**
     * Run the ONNX session in a worker thread. onnxruntime-node's run blocks its thread for the whole model run; in a
     * worker, gRPC I/O, tokenizing and health checks go on meanwhile. @default true
     */
    runInWorker: z.boolean().default(true),
    /** The remote backend: another PreferenceOracle service. */
    remote: z
      .object({
        /** gRPC target ("127.0.0.1:50061", "dns:///pairrm:50051"). @default "" (must be set for backend "remote") */
        target: z.string().default(""),
        /** Deadline of the Describe call made at start-up, in ms. @default 10 s */
        connectTimeoutMs: z.number().int().positive().default(10_000),
        /** A Compare request that gets no answer within this fails with DEADLINE_EXCEEDED, in ms. @default 120 s */
        requestTimeoutMs: z.number().int().positive().default(120_000),
      })
      .strict()
      .default({ target: "", connectTimeoutMs: 10_000, requestTimeoutMs: 120_000 }),
    /** Strength of the synthetic judges: P(winner ≻ loser) = σ(strength × score difference). @default 2 */
    syntheticStrength: z.number().positive().max(100).default(2),
    /**
     * Margins of synthetic-intransitive's three wins: GOOD over NEUTRAL, NEUTRAL over BAD, BAD over GOOD. Equal
     * margins put the equilibrium at the even mix of the groups; unequal ones move it away from it. @default [1, 1, 1]
     */
    syntheticCycleMargins: z.tuple([z.number().positive().max(100), z.number().positive().max(100), z.number().positive().max(100)]).default([1, 1, 1]),
  })
  .strict()
  .superRefine((value, ctx) => {
    if (value.backend === "remote" && value.remote.target === "") {
      ctx.addIssue({ code: "custom", path: ["remote", "target"], message: 'required when backend is "remote"' });
    }
  });

export type OracleConfig = z.infer<typeof oracleConfigSchema>;
