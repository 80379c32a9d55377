/**
 * The one way to call any service: a typed client made from the service descriptor. Defaults (deadline, retries on
 * UNAVAILABLE through the service config, round_robin across every address a `dns:///` target resolves to, message
 * limits, keepalive) come from the client config, then the caller's overrides.
 *
 * Method shapes, by kind:
 * - unary:            `await client.describe({})`
 * - server_streaming: `for await (const r of client.getWeights({ version: 1 })) ...`
 * - client_streaming: `await client.upload(asyncIterableOfRequests)`
 * - bidi_streaming:   `for await (const r of client.compare(asyncIterableOfRequests)) ...`
 * Failures reject/throw an `RpcError` whose message starts with the method path.
 */
import * as grpc from "@grpc/grpc-js";
import { create, type DescMethod, type DescService, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { type ClientConfig, clientConfigSchema } from "../config/server.js";
import { RpcError } from "../errors.js";
import { resolveToken } from "./auth.js";
import { deserializer, methodPath, serializer } from "./definition.js";
import "./logging.js";
import { channelCredentials } from "./tls.js";

export interface CallOptions {
  /** Deadline from now, in ms. Unary calls default to the config's deadlineMs; streams have none unless given. */
  deadlineMs?: number;
  /** Cancels the call. */
  signal?: AbortSignal;
  metadata?: grpc.Metadata;
  /** A server call this call is made on behalf of: its deadline and cancellation carry over. */
  parent?: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>;
}

type In<M extends DescMethod> = MessageInitShape<M["input"]>;
type Out<M extends DescMethod> = MessageShape<M["output"]>;

export type ClientMethod<M extends DescMethod> = M["methodKind"] extends "unary"
  ? (request: In<M>, options?: CallOptions) => Promise<Out<M>>
  : M["methodKind"] extends "server_streaming"
    ? (request: In<M>, options?: CallOptions) => AsyncIterable<Out<M>>
    : M["methodKind"] extends "client_streaming"
      ? (requests: AsyncIterable<In<M>> | Iterable<In<M>>, options?: CallOptions) => Promise<Out<M>>
      : (requests: AsyncIterable<In<M>> | Iterable<In<M>>, options?: CallOptions) => AsyncIterable<Out<M>>;

export type Client<S extends DescService> = (S extends { method: infer Methods }
  ? { [K in keyof Methods]: Methods[K] extends DescMethod ? ClientMethod<Methods[K]> : never }
  : never) & {
  /** Resolves once connected; rejects after `deadlineMs`. */
  waitForReady(deadlineMs?: number): Promise<void>;
  close(): void;
  readonly target: string;
};

export interface ClientOptions extends Partial<Omit<ClientConfig, "tls">> {
  tls?: ClientConfig["tls"];
  /** Extra grpc-js channel options, applied last. */
  channelOptions?: grpc.ChannelOptions;
}

/** The service config: round_robin over resolved addresses, and retry of UNAVAILABLE with exponential back-off. */
export function serviceConfig(service: DescService, config: ClientConfig): string {
  // grpc-js refuses a retry policy of fewer than 2 attempts: maxAttempts 1 means no policy at all.
  if (config.maxAttempts < 2) return JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] });
  return JSON.stringify({
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: [
      {
        name: [{ service: service.typeName }],
        retryPolicy: {
          maxAttempts: config.maxAttempts,
          initialBackoff: `${config.initialBackoffMs / 1000}s`,
          maxBackoff: `${config.maxBackoffMs / 1000}s`,
          backoffMultiplier: 2,
          retryableStatusCodes: ["UNAVAILABLE"],
        },
      },
    ],
  });
}

function callOptions(options: CallOptions | undefined, defaultDeadlineMs: number | undefined): grpc.CallOptions {
  const deadlineMs = options?.deadlineMs ?? defaultDeadlineMs;
  const out: grpc.CallOptions = {};
  if (deadlineMs !== undefined) out.deadline = Date.now() + deadlineMs;
  if (options?.parent) out.parent = options.parent as unknown as grpc.ServerUnaryCall<unknown, unknown>;
  return out;
}

function wrapError(err: unknown, path: string): RpcError {
  const rpc = RpcError.from(err);
  return new RpcError(rpc.code, `${path}: ${rpc.message}`, { cause: err });
}

function onAbort(signal: AbortSignal | undefined, cancel: () => void): () => void {
  if (!signal) return () => {};
  if (signal.aborted) {
    cancel();
    return () => {};
  }
  signal.addEventListener("abort", cancel, { once: true });
  return () => signal.removeEventListener("abort", cancel);
}

/**
 * Reads a grpc-js response stream as an AsyncIterable, turning its error into an RpcError naming the method.
 * Listeners are attached at once, not at the first `next()`, so a call that fails before the caller starts reading
 * still reports its status (instead of an unhandled 'error' event); the stream is paused while `highWater`
 * messages wait unread. Stopping early (break/return) cancels the call.
 */
function readStream<T>(stream: grpc.ClientReadableStream<T>, path: string, cleanup: () => void, highWater = 16): AsyncIterable<T> {
  const buffered: T[] = [];
  let failure: RpcError | undefined;
  let ended = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  stream.on("data", (message: T) => {
    buffered.push(message);
    if (buffered.length >= highWater) stream.pause();
    notify();
  });
  stream.on("error", (err) => {
    failure = wrapError(err, path);
    ended = true;
    cleanup();
    notify();
  });
  stream.on("end", () => {
    ended = true;
    cleanup();
    notify();
  });
  return {
    [Symbol.asyncIterator]: () => ({
      async next(): Promise<IteratorResult<T>> {
        while (buffered.length === 0 && !ended) await new Promise<void>((resolve) => (wake = resolve));
        if (buffered.length > 0) {
          const value = buffered.shift() as T;
          if (buffered.length < highWater / 2 && stream.isPaused()) stream.resume();
          return { value, done: false };
        }
        if (failure) throw failure;
        return { value: undefined, done: true };
      },
      async return(): Promise<IteratorResult<T>> {
        if (!ended) {
          ended = true;
          stream.cancel();
          cleanup();
        }
        buffered.length = 0;
        return { value: undefined, done: true };
      },
    }),
  };
}

/** Writes requests into a call with backpressure, then half-closes. Errors cancel the call. */
async function pump<T>(
  call: grpc.ClientWritableStream<T>,
  requests: AsyncIterable<T> | Iterable<T>,
  onError: (err: unknown) => void,
): Promise<void> {
  try {
    for await (const request of requests) {
      if (!call.write(request)) await new Promise<void>((resolve) => call.once("drain", resolve));
    }
    call.end();
  } catch (err) {
    onError(err);
  }
}

/** Makes a typed client for `service` at `target` ("127.0.0.1:50051", "dns:///oracle:50052"). */
export function createClient<S extends DescService>(service: S, target: string, options: ClientOptions = {}): Client<S> {
  const { channelOptions, ...overrides } = options;
  const config = clientConfigSchema.parse(overrides);
  const authToken = resolveToken(config, "client");
  const channel = new grpc.Client(target, channelCredentials(config), {
    "grpc.service_config": serviceConfig(service, config),
    "grpc.enable_retries": 1,
    "grpc.max_receive_message_length": config.maxMessageBytes,
    "grpc.max_send_message_length": config.maxMessageBytes,
    "grpc.keepalive_time_ms": config.keepaliveTimeMs,
    "grpc.keepalive_permit_without_calls": 1,
    ...channelOptions,
  });

  const client: Record<string, unknown> = {
    target,
    close: () => channel.close(),
    waitForReady: (deadlineMs = config.deadlineMs) =>
      new Promise<void>((resolve, reject) =>
        channel.waitForReady(Date.now() + deadlineMs, (err) =>
          err ? reject(new RpcError(grpc.status.UNAVAILABLE, `${target}: not ready within ${deadlineMs} ms: ${err.message}`)) : resolve(),
        ),
      ),
  };

  for (const method of service.methods) {
    const path = methodPath(method);
    const serialize = serializer(method.input);
    const deserialize = deserializer(method.output);
    const toRequest = (init: unknown) => create(method.input, init as MessageInitShape<typeof method.input>);
    const metadataOf = (o?: CallOptions) => {
      const metadata = o?.metadata?.clone() ?? new grpc.Metadata();
      if (authToken) metadata.set("authorization", `Bearer ${authToken}`);
      return metadata;
    };

    switch (method.methodKind) {
      case "unary":
        client[method.localName] = (request: unknown, o?: CallOptions) =>
          new Promise((resolve, reject) => {
            const call = channel.makeUnaryRequest(path, serialize, deserialize, toRequest(request), metadataOf(o), callOptions(o, config.deadlineMs), (err, response) => {
              cleanup();
              if (err) reject(wrapError(err, path));
              else resolve(response);
            });
            const cleanup = onAbort(o?.signal, () => call.cancel());
          });
        break;
      case "server_streaming":
        client[method.localName] = (request: unknown, o?: CallOptions) => {
          const call = channel.makeServerStreamRequest(path, serialize, deserialize, toRequest(request), metadataOf(o), callOptions(o, undefined));
          return readStream(call, path, onAbort(o?.signal, () => call.cancel()));
        };
        break;
      case "client_streaming":
        client[method.localName] = (requests: AsyncIterable<unknown> | Iterable<unknown>, o?: CallOptions) =>
          new Promise((resolve, reject) => {
            const call = channel.makeClientStreamRequest(path, serialize, deserialize, metadataOf(o), callOptions(o, config.deadlineMs), (err, response) => {
              cleanup();
              if (err) reject(wrapError(err, path));
              else resolve(response);
            });
            const cleanup = onAbort(o?.signal, () => call.cancel());
            void pump(call, mapIterable(requests, toRequest), (err) => {
              call.cancel();
              reject(err);
            });
          });
        break;
      case "bidi_streaming":
        client[method.localName] = (requests: AsyncIterable<unknown> | Iterable<unknown>, o?: CallOptions) => {
          const call = channel.makeBidiStreamRequest(path, serialize, deserialize, metadataOf(o), callOptions(o, undefined));
          let sourceError: unknown;
          void pump(call as unknown as grpc.ClientWritableStream<unknown>, mapIterable(requests, toRequest), (err) => {
            sourceError = err;
            call.cancel();
          });
          const responses = readStream(call as unknown as grpc.ClientReadableStream<unknown>, path, onAbort(o?.signal, () => call.cancel()));
          // A failure of the request source is the caller's own error: rethrow it rather than CANCELLED.
          return (async function* () {
            try {
              for await (const response of responses) yield response;
            } catch (err) {
              throw sourceError ?? err;
            }
          })();
        };
        break;
    }
  }
  return client as Client<S>;
}

async function* mapIterable<T, U>(source: AsyncIterable<T> | Iterable<T>, fn: (value: T) => U): AsyncGenerator<U> {
  for await (const value of source) yield fn(value);
}
