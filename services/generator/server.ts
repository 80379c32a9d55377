/**
 * Mounts a PolicyGenerator as the sppo.v1.Generator gRPC service.
 *
 * Generate and Score are bidi streams: every request is answered by exactly one response carrying its request_id,
 * in the order answers finish (not the order of requests). A bad request — or one refused because the generator is
 * overloaded (RESOURCE_EXHAUSTED) — gets a response with `error` set and the stream keeps going. A stream with
 * `maxInFlightPerStream` unanswered requests is not read further until one is answered (backpressure on the client).
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
import type { HandlerContext, ServiceImplementation } from "../../lib/grpc/index.js";
import type { EngineLoader } from "./engine.js";
import { PolicyGenerator } from "./generator.js";

/**
 * Answers each request of `requests` with `answer` (which never throws), concurrently, yielding responses as they
 * finish. At most `maxInFlight` answers are pending; reading resumes when one finishes. Ends when the input has ended
 * and every answer went out, or at once when the call is cancelled.
 */
async function* answerEach<Req, Res>(
  requests: AsyncIterable<Req>,
  context: HandlerContext,
  maxInFlight: number,
  answer: (request: Req) => Promise<Res>,
): AsyncGenerator<Res> {
  const ready: Res[] = [];
  let wake: (() => void) | undefined;
  let inFlight = 0;
  let inputDone = false;
  let inputError: { error: unknown } | undefined;
  let resumeReading: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onAbort = () => notify();
  context.signal.addEventListener("abort", onAbort, { once: true });
  const reader = (async () => {
    try {
      for await (const request of requests) {
        if (context.signal.aborted) break;
        inFlight++;
        void answer(request).then(
          (response) => {
            inFlight--;
            ready.push(response);
            resumeReading?.();
            notify();
          },
          (err: unknown) => {
            // `answer` turns failures into responses; a throw here is a bug, and it ends the call (never a hang).
            inFlight--;
            inputError ??= { error: err };
            resumeReading?.();
            notify();
          },
        );
        while (inFlight >= maxInFlight && !context.signal.aborted) {
          await new Promise<void>((resolve) => {
            resumeReading = resolve;
          });
          resumeReading = undefined;
        }
      }
    } catch (err) {
      inputError = { error: err };
    } finally {
      inputDone = true;
      notify();
    }
  })();
  try {
    for (;;) {
      while (ready.length > 0) yield ready.shift() as Res;
      if (context.signal.aborted) return;
      if (inputError) throw inputError.error;
      if (inputDone && inFlight === 0) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  } finally {
    context.signal.removeEventListener("abort", onAbort);
    resumeReading?.();
    void reader;
  }
}

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
  /** The tfjs engine section (its backend, unless generator.tfjsBackend overrides it). */
  engine?: Pick<EngineConfig, "backend">;
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
