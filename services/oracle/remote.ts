/**
 * Backend "remote": another sppo.v1.PreferenceOracle service, in any language (a Python PairRM server, a
 * human-labelling queue). Requests go over long-lived Compare streams through the project's one request
 * multiplexer (lib/grpc/multiplexer.ts): answers are matched by request_id, in whatever order they come; a broken
 * stream's requests are re-sent (at most 3 times), as is a request unanswered after `requestTimeoutMs`. At connect
 * time Describe is called, so a wrong target fails at start-up; K is limited to the smaller of the two services'
 * limits. The remote's matrices are checked like any backend's (checkedOracle).
 */
import { type ClientConfig, clientConfigSchema } from "../../lib/config/server.js";
import { Code, RpcError } from "../../lib/errors.js";
import { type Client, createClient } from "../../lib/grpc/index.js";
import { createMultiplexer, type Multiplexer } from "../../lib/grpc/multiplexer.js";
import { create, toBinary } from "@bufbuild/protobuf";
import { type CompareRequest, CompareRequestSchema, type CompareResponse, PreferenceOracle } from "../../gen/sppo/v1/oracle_pb.js";
import { modelError } from "./model-dir.js";
import type { Comparison, Oracle, OracleDescription } from "./oracle.js";

export interface RemoteOracleOptions {
  /** gRPC target of the other oracle. */
  target: string;
  /** Largest K this side accepts (the remote's own limit also applies). */
  maxCandidates: number;
  /** Deadline of the Describe call at connect time, in ms. */
  connectTimeoutMs: number;
  /** A request with no answer after this is re-sent on a new stream; after 3 re-sends it fails with DEADLINE_EXCEEDED, in ms. */
  requestTimeoutMs: number;
  /** Client settings (retries, message limits, TLS). */
  client?: Partial<ClientConfig>;
}

/** The matrix rows of a CompareResponse's row-major probabilities. */
export function matrixOf(response: CompareResponse, k: number): number[][] {
  if (response.k !== k || response.probabilities.length !== k * k) {
    throw new RpcError(Code.INTERNAL, `the remote oracle answered k = ${response.k} with ${response.probabilities.length} probabilities for ${k} candidates`);
  }
  return Array.from({ length: k }, (_, i) => response.probabilities.slice(i * k, (i + 1) * k));
}

export class RemoteOracle implements Oracle {
  private nextId = 0;
  private closed = false;

  private constructor(
    private readonly client: Client<typeof PreferenceOracle>,
    private readonly streams: Multiplexer<CompareRequest, CompareResponse>,
    private readonly description: OracleDescription,
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
    // No `ready`: with the remote down, a request fails after its re-sends instead of waiting for it.
    const streams = createMultiplexer<CompareRequest, CompareResponse>((requests, signal) => client.compare(requests, { signal }), {
      name: `remote oracle ${options.target}`,
      requestTimeoutMs: options.requestTimeoutMs,
      sizeOf: (r) => toBinary(CompareRequestSchema, r).length,
      maxMessageBytes: clientConfigSchema.parse(options.client ?? {}).maxMessageBytes,
    });
    return new RemoteOracle(client, streams, description);
  }

  async compare(prompt: string, candidates: readonly string[]): Promise<Comparison> {
    if (this.closed) throw new RpcError(Code.UNAVAILABLE, "the oracle is closed");
    const response = await this.streams.request(create(CompareRequestSchema, { requestId: `r${this.nextId++}`, prompt, candidates: [...candidates] }));
    return { matrix: matrixOf(response, candidates.length), truncatedTexts: response.truncatedTexts };
  }

  describe(): OracleDescription {
    return { ...this.description };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.streams.abort(new RpcError(Code.UNAVAILABLE, "the oracle is closed"));
    this.client.close();
  }
}
