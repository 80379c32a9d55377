/**
 * What the two ONNX backends (pairwise-onnx.ts, reward-onnx.ts) share: the options they load with, the session with
 * its tokenizer and model config, dynamic batching of their rows, Describe and close.
 *
 * Rows of concurrent requests share ONNX runs through lib/streams/batcher.ts: a request's rows are one job (or one
 * job per maxBatch rows when it has more, so that it spans several runs), and any jobs may share a run.
 */
import { basename } from "node:path";
import { Code, RpcError } from "../../lib/errors.js";
import { Batcher, type BatcherOptions } from "../../lib/streams/batcher.js";
import { type LoadedSession, type ModelDirConfig, runRows, type TokenRow } from "./model-dir.js";
import type { Comparison, Oracle, OracleDescription } from "./oracle.js";
import type { TokenEncoder } from "./token-encoder.js";

/** How rows of concurrent requests share ONNX runs (config oracle.batching). */
export type OracleBatching = Pick<BatcherOptions<TokenRow>, "maxBatch" | "maxWaitMs" | "maxConcurrentRuns">;

export interface OnnxOracleOptions {
  /** The model directory. */
  modelDir: string;
  /** Largest K accepted. */
  maxCandidates: number;
  batching: OracleBatching;
  /** onnxruntime threads; 0 lets it choose. */
  intraOpThreads: number;
  /** Run the session in a worker thread. @default true */
  runInWorker?: boolean;
}

/** Pads with the config's pad id, else the tokenizer's usual pad token, else 0. */
export function padIdOf(config: ModelDirConfig, encoder: TokenEncoder): number {
  if (config.pad_token_id !== undefined) return config.pad_token_id;
  for (const token of ["[PAD]", "<pad>", "<|pad|>"]) {
    const id = encoder.tokenId(token);
    if (id !== undefined) return id;
  }
  return 0;
}

/** An oracle over one ONNX session whose requests become rows of model input, batched across requests. */
export abstract class OnnxSessionOracle implements Oracle {
  private readonly batcher: Batcher<TokenRow[], number[]>;
  private readonly maxBatch: number;
  private readonly description: OracleDescription;

  protected constructor(
    protected readonly loaded: LoadedSession,
    readonly encoder: TokenEncoder,
    readonly config: ModelDirConfig,
    what: { backend: OracleDescription["backend"]; dir: string; pairwise: boolean },
    options: Pick<OnnxOracleOptions, "maxCandidates" | "batching">,
  ) {
    this.description = { backend: what.backend, model: config.model_name ?? basename(what.dir), maxCandidates: options.maxCandidates, pairwise: what.pairwise };
    const padId = padIdOf(config, encoder);
    this.maxBatch = options.batching.maxBatch;
    this.batcher = new Batcher(
      async (jobs: TokenRow[][]) => {
        const rows = jobs.flat();
        const outputs = await runRows(loaded, rows, padId);
        if (outputs.length !== rows.length) throw new RpcError(Code.INTERNAL, `oracle: the model returned ${outputs.length} outputs for a batch of ${rows.length} rows`);
        let at = 0;
        return jobs.map((job) => outputs.slice(at, (at += job.length)));
      },
      { ...options.batching, name: "oracle", rowsOf: (job) => job.length },
    );
  }

  /** One output per row, the rows run in shared batches with other requests' (see the file header). */
  protected async runBatched(rows: readonly TokenRow[]): Promise<number[]> {
    const jobs: TokenRow[][] = [];
    for (let at = 0; at < rows.length; at += this.maxBatch) jobs.push(rows.slice(at, at + this.maxBatch));
    return (await this.batcher.submitAll(jobs)).flat();
  }

  abstract compare(prompt: string, candidates: readonly string[]): Promise<Comparison>;

  /** Runs of the batcher so far. */
  get batchStats() {
    return this.batcher.stats;
  }

  describe(): OracleDescription {
    return { ...this.description };
  }

  async close(): Promise<void> {
    await this.batcher.close();
    await this.loaded.session.release();
  }
}
