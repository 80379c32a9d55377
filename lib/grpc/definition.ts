/**
 * protoc-gen-es v2 emits service descriptors but no grpc-js stubs. This turns a descriptor into a grpc-js
 * `ServiceDefinition`, so method paths, streaming shapes and (de)serializers all come from the .proto files.
 */
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { type DescMessage, type DescMethod, type DescService, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";

/** `/package.Service/Method`, the HTTP/2 path of a method. */
export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** grpc-js needs a Buffer back from a serializer, not a bare Uint8Array. */
export function serializer<D extends DescMessage>(schema: D): (message: MessageShape<D>) => Buffer {
  return (message) => {
    const bytes = toBinary(schema, message);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

/**
 * Decodes `bytes` with invalid UTF-8 in string fields replaced by U+FFFD instead of failing. protobuf-es rejects
 * invalid UTF-8 in proto3 strings, and a deserializer that throws makes grpc-js end the whole call with INTERNAL
 * "Error deserializing request"; decoded leniently, the request reaches the service, whose validation rejects a
 * field holding U+FFFD with INVALID_ARGUMENT naming it (services/oracle/oracle.ts, services/generator/generator.ts),
 * and the stream goes on. The library's text decoder is swapped only for this one synchronous call (no other
 * decode can interleave) and only after the strict decode failed, so every other decode stays strict.
 */
function fromBinaryLenient<D extends DescMessage>(schema: D, bytes: Uint8Array): MessageShape<D> {
  const strict = getTextEncoding();
  configureTextEncoding({ ...strict, decodeUtf8: (utf8: Uint8Array) => strict.decodeUtf8(utf8, false) });
  try {
    return fromBinary(schema, bytes);
  } finally {
    configureTextEncoding(strict);
  }
}

/** Strict decode; when that fails, a lenient one (invalid UTF-8 → U+FFFD); the strict error if both fail. */
export function deserializer<D extends DescMessage>(schema: D): (bytes: Buffer) => MessageShape<D> {
  return (bytes) => {
    try {
      return fromBinary(schema, bytes);
    } catch (err) {
      try {
        return fromBinaryLenient(schema, bytes);
      } catch {
        throw err;
      }
    }
  };
}

export function methodDefinition(method: DescMethod): MethodDefinition<unknown, unknown> {
  return {
    path: methodPath(method),
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: serializer(method.input) as (value: unknown) => Buffer,
    requestDeserialize: deserializer(method.input),
    responseSerialize: serializer(method.output) as (value: unknown) => Buffer,
    responseDeserialize: deserializer(method.output),
    originalName: method.localName,
  };
}

/** The grpc-js definition of a whole service, keyed by the methods' local (camelCase) names. */
export function serviceDefinition(service: DescService): ServiceDefinition {
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) definition[method.localName] = methodDefinition(method);
  return definition as ServiceDefinition;
}
