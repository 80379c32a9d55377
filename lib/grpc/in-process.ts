/**
 * A client that calls a service implementation in this process, with no transport: the same `Client<S>` shape
 * as `createClient`, so code written against a service runs unchanged against either. Used to measure what the
 * gRPC hop costs (bench/pipeline.ts) and where a single process needs no sockets.
 */
import { create, type DescMessage, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { Metadata } from "@grpc/grpc-js";
import { RpcError } from "../errors.js";
import type { Client } from "./client.js";
import type { HandlerContext, ServiceImplementation } from "./implementation.js";

function toMessage(schema: DescMessage, value: unknown): unknown {
  return (value as { $typeName?: string })?.$typeName === schema.typeName ? value : create(schema, value as MessageInitShape<DescMessage>);
}

async function* mapIterable<T, U>(source: AsyncIterable<T> | Iterable<T>, fn: (value: T) => U): AsyncGenerator<U> {
  for await (const value of source) yield fn(value);
}

export function createInProcessClient<S extends DescService>(service: S, implementation: ServiceImplementation<S>): Client<S> {
  const client: Record<string, unknown> = {
    target: "in-process",
    close: () => {},
    waitForReady: async () => {},
  };
  for (const method of service.methods) {
    const path = `/${service.typeName}/${method.name}`;
    const handler = (implementation as Record<string, (...args: unknown[]) => unknown>)[method.localName];
    const context = (signal?: AbortSignal): HandlerContext => ({ path, metadata: new Metadata(), signal: signal ?? new AbortController().signal, peer: "in-process" });
    const fail = (err: unknown): never => {
      const rpc = RpcError.from(err);
      throw new RpcError(rpc.code, `${path}: ${rpc.message}`, { cause: err });
    };
    const input = (value: unknown) => toMessage(method.input, value);
    const output = (value: unknown) => toMessage(method.output, value);
    switch (method.methodKind) {
      case "unary":
        client[method.localName] = (request: unknown, o?: { signal?: AbortSignal }) =>
          (handler(input(request), context(o?.signal)) as Promise<unknown>).then(output, fail);
        break;
      case "client_streaming":
        client[method.localName] = (requests: AsyncIterable<unknown>, o?: { signal?: AbortSignal }) =>
          (handler(mapIterable(requests, input), context(o?.signal)) as Promise<unknown>).then(output, fail);
        break;
      case "server_streaming":
      case "bidi_streaming":
        client[method.localName] = (source: unknown, o?: { signal?: AbortSignal }) =>
          (async function* () {
            const arg = method.methodKind === "server_streaming" ? input(source) : mapIterable(source as AsyncIterable<unknown>, input);
            try {
              for await (const response of handler(arg, context(o?.signal)) as AsyncIterable<unknown>) yield output(response);
            } catch (err) {
              fail(err);
            }
          })();
        break;
    }
  }
  return client as Client<S>;
}
