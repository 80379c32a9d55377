/**
 * Backend "remote": another sppo.v1.PreferenceOracle service, in any language (a Python PairRM server, a
 * human-labelling queue). One long-lived Compare stream carries every request; answers are matched by request_id,
 * in whatever order they come. At connect time Describe is called, so a wrong target fails at start-up; K is limited
 * to the smaller of the two services' limits. The remote's matrices are checked like any backend's (checkedOracle).
 */
import type { ClientConfig } from "../../lib/config/server.js";
import { Code, RpcError } from "../../lib/errors.js";
import { type Client, createClient } from "../../lib/grpc/index.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type CompareRequestSchema, type CompareResponse, PreferenceOracle } from "../../gen/sppo/v1/oracle_pb.js";
import { AsyncQueue } from "../../lib/streams/async-queue.js";
import { modelError } from "./model-dir.js";
import type { Comparison, Oracle, OracleDescription } from "./oracle.js";

export interface RemoteOracleOptions {
  /** gRPC target of the other oracle. */
  target: string;
  /** Largest K this side accepts (the remote's own limit also applies). */
  maxCandidates: number;
  /** Deadline of the Describe call at connect time, in ms. */
  connectTimeoutMs: number;
  /** A request with no answer after this fails with DEADLINE_EXCEEDED, in ms. */
  requestTimeoutMs: number;
  /** Client settings (retries, message limits, TLS). */
  client?: Partial<ClientConfig>;
}

type RequestQueue = AsyncQueue<MessageInitShape<typeof CompareRequestSchema>>;

interface PendingCompare {
  k: number;
  /** The stream the request went out on. */
  stream: RequestQueue;
  resolve: (c: Comparison) => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout;
}

/** The matrix rows of a CompareResponse's row-major probabilities. */
export function matrixOf(response: CompareResponse, k: number): number[][] {
  if (response.k !== k || response.probabilities.length !== k * k) {
    throw new RpcError(Code.INTERNAL, `the remote oracle answered k = ${response.k} with ${response.probabilities.length} probabilities for ${k} candidates`);
  }
  return Array.from({ length: k }, (_, i) => response.probabilities.slice(i * k, (i + 1) * k));
}

export class RemoteOracle implements Oracle {
  private stream: RequestQueue | undefined;
  private readonly pending = new Map<string, PendingCompare>();
  private nextId = 0;
  private closed = false;

  private constructor(
    private readonly client: Client<typeof PreferenceOracle>,
    private readonly description: OracleDescription,
    private readonly options: RemoteOracleOptions,
  ) {}

  /** Connects and asks the remote what it is; fails with FAILED_PRECONDITION when it cannot be reached. */
  static async connect(options: RemoteOracleOptions): Promise<RemoteOracle> {
    const client = createClient(PreferenceOracle, options.target, options.client ?? {});
    let remote: Awaited<ReturnType<typeof client.describe>>;
    try {
      remote = await client.describe({}, { deadlineMs: options.connectTimeoutMs });
    } catch (err) {
      client.close();
      throw modelError(`remote oracle ${options.target}: Describe failed: ${(err as Error).message}`, err);
    }
    const description: OracleDescription = {
      backend: "remote",
      model: `${remote.backend}: ${remote.model} (at ${options.target})`,
      maxCandidates: remote.maxCandidates > 0 ? Math.min(remote.maxCandidates, options.maxCandidates) : options.maxCandidates,
      pairwise: remote.pairwise,
    };
    return new RemoteOracle(client, description, options);
  }

  /** Opens the shared Compare stream and dispatches its responses. */
  private open(): RequestQueue {
    const requests: RequestQueue = new AsyncQueue();
    this.stream = requests;
    const responses = this.client.compare(requests);
    void (async () => {
      let failure: unknown = new RpcError(Code.UNAVAILABLE, `remote oracle ${this.options.target}: the Compare stream ended`);
      try {
        for await (const response of responses) this.settle(response);
      } catch (err) {
        failure = RpcError.from(err, Code.UNAVAILABLE);
      }
      // Whatever is still waiting on this stream will not be answered on it.
      if (this.stream === requests) this.stream = undefined;
      requests.end();
      for (const [id, p] of this.pending) {
        if (p.stream !== requests) continue;
        clearTimeout(p.timer);
        this.pending.delete(id);
        p.reject(failure);
      }
    })();
    return requests;
  }

  private settle(response: CompareResponse): void {
    const p = this.pending.get(response.requestId);
    if (!p) return; // timed out already
    this.pending.delete(response.requestId);
    clearTimeout(p.timer);
    if (response.error && response.error.code !== Code.OK) {
      p.reject(RpcError.fromStatus(response.error, "remote oracle"));
      return;
    }
    try {
      p.resolve({ matrix: matrixOf(response, p.k), truncatedTexts: response.truncatedTexts });
    } catch (err) {
      p.reject(err);
    }
  }

  compare(prompt: string, candidates: readonly string[]): Promise<Comparison> {
    if (this.closed) return Promise.reject(new RpcError(Code.UNAVAILABLE, "the oracle is closed"));
    const requestId = `r${this.nextId++}`;
    const stream = this.stream ?? this.open();
    return new Promise<Comparison>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new RpcError(Code.DEADLINE_EXCEEDED, `remote oracle ${this.options.target}: no answer within ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      this.pending.set(requestId, { k: candidates.length, stream, resolve, reject, timer });
      stream.push({ requestId, prompt, candidates: [...candidates] });
    });
  }

  describe(): OracleDescription {
    return { ...this.description };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stream?.end();
    this.stream = undefined;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new RpcError(Code.UNAVAILABLE, "the oracle is closed"));
    }
    this.client.close();
  }
}
