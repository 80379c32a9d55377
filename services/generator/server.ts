/**
 * Mounts a PolicyGenerator as the sppo.v1.Generator gRPC service.
 *
 * Generate and Score are bidi streams: every request is answered by exactly one response carrying its request_id,
 * in the order answers finish (not the order of requests). A bad request — or one refused because the generator is
 * overloaded (RESOURCE_EXHAUSTED) — gets a response with `error` set and the stream keeps going. A stream with
 * `maxInFlightPerStream` unanswered requests is not read further until one is answered (backpressure on the client;
 * lib/grpc/answer-each.ts).
 *
 * `sppo serve generator` uses `createGeneratorService(config)`; tests and other programs serve it the same way:
 *   const { implementation, close } = await createGeneratorService(config);
 *   const running = await serve({ name: "generator", services: [mount(Generator, implementation)], config: ... });
 *   ... await running.shutdown(); await close();
 */
import { create } from "@bufbuild/protobuf";
import {
  type GenerateRequest,
  type GenerateResponse,
  GetPolicyResponseSchema,
  type Generator,
  LoadPolicyResponseSchema,
  type ScoreRequest,
  type ScoreResponse,
} from "../../gen/sppo/v1/generator_pb.js";
import type { EngineConfig } from "../../lib/config/engine.js";
import type { GeneratorConfig } from "../../lib/config/generator.js";
import type { ClientConfig } from "../../lib/config/server.js";
import { answerEach } from "../../lib/grpc/answer-each.js";
import type { HandlerContext, ServiceImplementation } from "../../lib/grpc/index.js";
import type { EngineLoader } from "./engine.js";
import { PolicyGenerator } from "./generator.js";

/** The sppo.v1.Generator implementation over `generator`. */
export function generatorImplementation(generator: PolicyGenerator, config: Pick<GeneratorConfig, "maxInFlightPerStream">): ServiceImplementation<typeof Generator> {
  return {
    generate(requests: AsyncIterable<GenerateRequest>, context: HandlerContext): AsyncIterable<GenerateResponse> {
      return answerEach(requests, context, config.maxInFlightPerStream, (r) => generator.generate(r, context.signal));
    },
    score(requests: AsyncIterable<ScoreRequest>, context: HandlerContext): AsyncIterable<ScoreResponse> {
      return answerEach(requests, context, config.maxInFlightPerStream, (r) => generator.score(r, context.signal));
    },
    async loadPolicy(request, context) {
      const { policy, loadSeconds } = await generator.loadPolicy(request.version, { source: request.source, sha256: request.sha256, signal: context.signal });
      return create(LoadPolicyResponseSchema, { policy, loadSeconds });
    },
    async getPolicy() {
      return create(GetPolicyResponseSchema, generator.getPolicy());
    },
  };
}

/** What createGeneratorService needs: the generator section, and client settings for pulling weights. */
export interface GeneratorServiceConfig {
  generator: GeneratorConfig;
  /** The engine section every engine reads: engine.backend and engine.onnx (generator.tfjsBackend/onnxThreads override them). */
  engine?: Partial<Pick<EngineConfig, "backend" | "onnx">>;
  client?: Partial<ClientConfig>;
}

/**
 * Loads the base policy (failing at start-up on a bad model directory or an unavailable engine) and builds the gRPC
 * implementation. `close()` fails queued requests and frees every policy version; call it after the server stopped.
 */
export async function createGeneratorService(
  config: GeneratorServiceConfig,
  options: { engineLoader?: EngineLoader } = {},
): Promise<{ implementation: ServiceImplementation<typeof Generator>; generator: PolicyGenerator; close(): Promise<void> }> {
  const generator = await PolicyGenerator.create({ generator: config.generator, engine: config.engine, client: config.client, engineLoader: options.engineLoader });
  return { implementation: generatorImplementation(generator, config.generator), generator, close: () => generator.close() };
}
