/**
 * Mounts an Oracle as the sppo.v1.PreferenceOracle gRPC service.
 *
 * Compare is a bidi stream: every request is answered by exactly one response carrying its request_id. Requests of
 * one stream run concurrently (so their pairs share ONNX batches) and their responses go out as they finish, in any
 * order. A bad request — or a model that produced NaN for it — gets a response with `error` set (gRPC code,
 * message, and the offending field when there is one) and the stream keeps going.
 *
 * `sppo serve oracle` uses `createOracleService(config)`; tests and other programs can `serve()` it the same way:
 *   const { implementation, close } = await createOracleService(config);
 *   const running = await serve({ name: "oracle", services: [{ service: PreferenceOracle, implementation }], config: ... });
 */
import { create } from "@bufbuild/protobuf";
import { type CompareRequest, type CompareResponse, CompareResponseSchema, DescribeResponseSchema, type PreferenceOracle } from "../../gen/sppo/v1/oracle_pb.js";
import type { OracleConfig } from "../../lib/config/oracle.js";
import type { ClientConfig } from "../../lib/config/server.js";
import { Code, invalidArgument, RpcError, statusOf } from "../../lib/errors.js";
import { answerEach } from "../../lib/grpc/answer-each.js";
import type { HandlerContext, ServiceImplementation } from "../../lib/grpc/index.js";
import { log } from "../../lib/log.js";
import { AdmissionLimit } from "../../lib/streams/admission.js";
import { createOracle } from "./create-oracle.js";
import { type Oracle, validateComparison } from "./oracle.js";

/** Requests of one stream being compared at once; reading pauses above this (backpressure on the client). */
export const MAX_IN_FLIGHT_PER_STREAM = 256;

/** The response to one request: the matrix, or `error` set. Never throws. */
export async function answer(oracle: Oracle, request: CompareRequest): Promise<CompareResponse> {
  const k = request.candidates.length;
  const issue = validateComparison(request.prompt, request.candidates, oracle.describe().maxCandidates);
  if (issue) {
    return create(CompareResponseSchema, {
      requestId: request.requestId,
      k,
      error: statusOf(invalidArgument(issue.field, issue.reason)),
    });
  }
  try {
    const { matrix, truncatedTexts } = await oracle.compare(request.prompt, request.candidates);
    return create(CompareResponseSchema, { requestId: request.requestId, k, probabilities: matrix.flat(), truncatedTexts });
  } catch (err) {
    const rpc = RpcError.from(err, Code.INTERNAL);
    if (!(err instanceof RpcError)) log.error({ err, requestId: request.requestId }, "oracle: unexpected error");
    else if (rpc.code === Code.INTERNAL) log.warn({ requestId: request.requestId, message: rpc.message }, "oracle: request failed");
    return create(CompareResponseSchema, { requestId: request.requestId, k, error: statusOf(rpc) });
  }
}

/**
 * The PreferenceOracle implementation over `oracle`. At most `maxQueuedRequests` requests, over all streams, wait
 * or run at once; a request beyond that is answered RESOURCE_EXHAUSTED at once (the stream goes on), so overload
 * does not grow memory or latency without bound. Each stream is answered through lib/grpc/answer-each.ts.
 */
export function oracleImplementation(oracle: Oracle, options: { maxQueuedRequests?: number } = {}): ServiceImplementation<typeof PreferenceOracle> {
  const admission = new AdmissionLimit({ limit: options.maxQueuedRequests ?? Number.POSITIVE_INFINITY, name: "oracle", setting: "oracle.maxQueuedRequests" });
  const admitted = async (request: CompareRequest): Promise<CompareResponse> => {
    try {
      admission.take();
    } catch (err) {
      return create(CompareResponseSchema, { requestId: request.requestId, k: request.candidates.length, error: statusOf(err) });
    }
    try {
      return await answer(oracle, request);
    } finally {
      admission.release();
    }
  };
  return {
    compare(requests: AsyncIterable<CompareRequest>, context: HandlerContext): AsyncIterable<CompareResponse> {
      return answerEach(requests, context, MAX_IN_FLIGHT_PER_STREAM, admitted);
    },
    async describe() {
      return create(DescribeResponseSchema, oracle.describe());
    },
  };
}

export interface OracleServiceConfig {
  oracle: OracleConfig;
  client?: Partial<ClientConfig>;
}

/**
 * Builds the configured oracle (failing at start-up on a bad model or an unreachable remote) and its gRPC
 * implementation. `close()` releases the oracle after the server has stopped.
 */
export async function createOracleService(
  config: OracleServiceConfig,
): Promise<{ implementation: ServiceImplementation<typeof PreferenceOracle>; oracle: Oracle; close(): Promise<void> }> {
  const oracle = await createOracle(config.oracle, { client: config.client });
  log.info({ ...oracle.describe() }, "oracle ready");
  return { implementation: oracleImplementation(oracle, { maxQueuedRequests: config.oracle.maxQueuedRequests }), oracle, close: () => oracle.close() };
}
