/**
 * Typed service implementations, derived from the descriptor (never re-declared by hand), and their adaptation
 * to grpc-js handlers.
 *
 * Handler shapes, by method kind:
 * - unary:            `async (request, context) => response`
 * - server_streaming: `async function* (request, context) { yield response; ... }`
 * - client_streaming: `async (requests: AsyncIterable, context) => response`
 * - bidi_streaming:   `async function* (requests: AsyncIterable, context) { ... yield response; ... }`
 * Responses may be full messages or `MessageInitShape` objects. Throwing an `RpcError` ends the call with its
 * code; anything else ends it with UNKNOWN (and is logged).
 */
import type {
  handleBidiStreamingCall,
  handleClientStreamingCall,
  handleServerStreamingCall,
  handleUnaryCall,
  Metadata,
  ServerDuplexStream,
  ServerReadableStream,
  ServerUnaryCall,
  ServerWritableStream,
  sendUnaryData,
  UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { setMaxListeners } from "node:events";
import type { Readable } from "node:stream";
import { create, type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, RpcError } from "../errors.js";
import { log } from "../log.js";
import { checkBearer } from "./auth.js";

/** What a handler knows about its call besides the request. */
export interface HandlerContext {
  /** The method being served ("/sppo.v1.PreferenceOracle/Compare"). */
  readonly path: string;
  readonly metadata: Metadata;
  /** Aborted when the client cancels or the deadline passes, and when the server shuts down past its grace period. */
  readonly signal: AbortSignal;
  /** The client's address. */
  readonly peer: string;
}

type In<M extends DescMethod> = MessageShape<M["input"]>;
type Out<M extends DescMethod> = MessageShape<M["output"]> | MessageInitShape<M["output"]>;

export type Handler<M extends DescMethod> = M["methodKind"] extends "unary"
  ? (request: In<M>, context: HandlerContext) => Promise<Out<M>>
  : M["methodKind"] extends "server_streaming"
    ? (request: In<M>, context: HandlerContext) => AsyncIterable<Out<M>>
    : M["methodKind"] extends "client_streaming"
      ? (requests: AsyncIterable<In<M>>, context: HandlerContext) => Promise<Out<M>>
      : (requests: AsyncIterable<In<M>>, context: HandlerContext) => AsyncIterable<Out<M>>;

/** An implementation of every method of service S, keyed by the methods' local names. */
export type ServiceImplementation<S extends DescService> = S extends { method: infer Methods }
  ? { [K in keyof Methods]: Methods[K] extends DescMethod ? Handler<Methods[K]> : never }
  : never;

/** Hooks the server uses to count in-flight calls and record metrics. */
export interface CallObserver {
  started(path: string): void;
  finished(path: string, code: Code, seconds: number): void;
}

function toMessage(schema: DescMessage, value: unknown): unknown {
  const maybe = value as { $typeName?: string };
  return maybe?.$typeName === schema.typeName ? value : create(schema, value as MessageInitShape<DescMessage>);
}

function toStatus(err: unknown, path: string): { code: Code; details: string } {
  const rpc = RpcError.from(err);
  if (!(err instanceof RpcError)) log.error({ err, path }, "handler failed with an unexpected error");
  return { code: rpc.code, details: rpc.message };
}

/** What contextOf needs of any grpc-js server call. */
type AnyCall = Pick<ServerUnaryCall<unknown, unknown>, "metadata" | "getPeer"> & {
  on(event: string, listener: () => void): unknown;
};

function contextOf(call: AnyCall, path: string, serverSignal: AbortSignal): HandlerContext {
  const controller = new AbortController();
  // A stream's handler may hang one listener per request in flight on it (tens at once): no limit warning.
  setMaxListeners(0, controller.signal);
  const abort = () => controller.abort(new RpcError(Code.CANCELLED, `${path}: the call was cancelled`));
  call.on("cancelled", abort);
  if (serverSignal.aborted) abort();
  else serverSignal.addEventListener("abort", abort, { once: true });
  // Drop the server-signal listener once the call is over, so long-lived servers do not accumulate them.
  controller.signal.addEventListener("abort", () => serverSignal.removeEventListener("abort", abort), { once: true });
  const done = () => serverSignal.removeEventListener("abort", abort);
  call.on("finish", done);
  call.on("close", done);
  return { path, metadata: call.metadata, signal: controller.signal, peer: call.getPeer() };
}

/** Writes with backpressure: waits for 'drain' when grpc-js's buffer is full, or stops when the call ends. */
async function write(call: ServerWritableStream<unknown, unknown>, message: unknown, signal: AbortSignal): Promise<void> {
  if (call.write(message)) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      call.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    call.once("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Request messages of a streaming call as an AsyncIterable (grpc-js streams are object-mode Readables). Node
 * destroys a stream whose iteration ends; on a bidi call that would also kill the response side, so it is told not to.
 */
function requestsOf<T>(call: ServerReadableStream<unknown, unknown>): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]: () => (call as unknown as Readable).iterator({ destroyOnReturn: false })[Symbol.asyncIterator](),
  } as AsyncIterable<T>;
}

/** Adapts a typed implementation to grpc-js's untyped handlers. */
export function adaptImplementation<S extends DescService>(
  service: S,
  implementation: ServiceImplementation<S>,
  observer: CallObserver,
  serverSignal: AbortSignal,
  /** When set, every call must carry this bearer token (lib/grpc/auth.ts). */
  authToken?: string,
): UntypedServiceImplementation {
  const handlers: UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const path = `/${service.typeName}/${method.name}`;
    const handler = (implementation as Record<string, unknown>)[method.localName];
    if (typeof handler !== "function") throw new TypeError(`implementation of ${service.typeName} lacks method ${method.localName}`);
    // The token check runs first in every call; for streams it runs when the response stream is first pulled.
    const fn = !authToken
      ? handler
      : method.methodKind === "unary" || method.methodKind === "client_streaming"
        ? async (request: unknown, context: HandlerContext) => {
            checkBearer(context.metadata, authToken, path);
            return (handler as (r: unknown, c: HandlerContext) => Promise<unknown>)(request, context);
          }
        : async function* (request: unknown, context: HandlerContext) {
            checkBearer(context.metadata, authToken, path);
            yield* (handler as (r: unknown, c: HandlerContext) => AsyncIterable<unknown>)(request, context);
          };
    const begin = () => {
      observer.started(path);
      return performance.now();
    };
    const end = (start: number, code: Code) => observer.finished(path, code, (performance.now() - start) / 1000);

    switch (method.methodKind) {
      case "unary":
      case "client_streaming": {
        // One response: the handler's promise settles the callback. A handler that throws before returning its
        // promise is still answered with a status.
        const answer = (call: ServerUnaryCall<unknown, unknown> | ServerReadableStream<unknown, unknown>, argument: unknown, callback: sendUnaryData<unknown>) => {
          const start = begin();
          const context = contextOf(call, path, serverSignal);
          Promise.resolve()
            .then(() => (fn as (r: unknown, c: HandlerContext) => Promise<unknown>)(argument, context))
            .then(
              (response) => {
                end(start, Code.OK);
                callback(null, toMessage(method.output, response));
              },
              (err) => {
                const status = toStatus(err, path);
                end(start, status.code);
                callback(status);
              },
            );
        };
        if (method.methodKind === "unary") {
          const handler: handleUnaryCall<unknown, unknown> = (call, callback) => answer(call, call.request, callback);
          handlers[method.localName] = handler;
        } else {
          const handler: handleClientStreamingCall<unknown, unknown> = (call, callback) => answer(call, requestsOf(call), callback);
          handlers[method.localName] = handler;
        }
        break;
      }
      case "server_streaming":
      case "bidi_streaming": {
        const run = async (
          call: ServerWritableStream<unknown, unknown>,
          source: (context: HandlerContext) => AsyncIterable<unknown>,
        ) => {
          const start = begin();
          const context = contextOf(call, path, serverSignal);
          try {
            for await (const response of source(context)) {
              if (context.signal.aborted) break;
              await write(call, toMessage(method.output, response), context.signal);
            }
            if (context.signal.aborted) {
              end(start, Code.CANCELLED);
              return;
            }
            end(start, Code.OK);
            call.end();
          } catch (err) {
            // A cancelled call's request stream ends with "premature close": that is the cancellation, not a fault.
            if (context.signal.aborted) {
              end(start, Code.CANCELLED);
              return;
            }
            const status = toStatus(err, path);
            end(start, status.code);
            call.emit("error", status);
          }
        };
        if (method.methodKind === "server_streaming") {
          const handler: handleServerStreamingCall<unknown, unknown> = (call) => {
            const gen = fn as (r: unknown, c: HandlerContext) => AsyncIterable<unknown>;
            void run(call, (context) => gen(call.request, context));
          };
          handlers[method.localName] = handler;
        } else {
          const handler: handleBidiStreamingCall<unknown, unknown> = (call) => {
            const gen = fn as (r: AsyncIterable<unknown>, c: HandlerContext) => AsyncIterable<unknown>;
            const duplex = call as ServerDuplexStream<unknown, unknown>;
            void run(duplex as unknown as ServerWritableStream<unknown, unknown>, (context) =>
              gen(requestsOf(duplex as unknown as ServerReadableStream<unknown, unknown>), context),
            );
          };
          handlers[method.localName] = handler;
        }
        break;
      }
    }
  }
  return handlers;
}
