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
 * UTF-8 → string where each byte that is not part of a well-formed UTF-8 sequence becomes the lone surrogate
 * U+DC00 + byte (U+DC80..U+DCFF; Python's "surrogateescape"). A lone surrogate never comes out of decoding valid
 * UTF-8, so `invalidUtf8` below can tell such a field apart from text that merely holds U+FFFD (which a byte-level
 * tokenizer produces for a sampled response cut inside a character).
 */
export function decodeUtf8Escaped(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  const cont = (at: number) => at < bytes.length && (bytes[at] & 0xc0) === 0x80;
  while (i < bytes.length) {
    const b = bytes[i];
    let cp = -1;
    let n = 1;
    if (b < 0x80) cp = b;
    else if (b >= 0xc2 && b <= 0xdf && cont(i + 1)) {
      cp = ((b & 0x1f) << 6) | (bytes[i + 1] & 0x3f);
      n = 2;
    } else if (b >= 0xe0 && b <= 0xef && cont(i + 1) && cont(i + 2)) {
      const c = ((b & 0x0f) << 12) | ((bytes[i + 1] & 0x3f) << 6) | (bytes[i + 2] & 0x3f);
      // Not overlong, not a surrogate.
      if (c >= 0x800 && (c < 0xd800 || c > 0xdfff)) {
        cp = c;
        n = 3;
      }
    } else if (b >= 0xf0 && b <= 0xf4 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      const c = ((b & 0x07) << 18) | ((bytes[i + 1] & 0x3f) << 12) | ((bytes[i + 2] & 0x3f) << 6) | (bytes[i + 3] & 0x3f);
      if (c >= 0x10000 && c <= 0x10ffff) {
        cp = c;
        n = 4;
      }
    }
    out += cp >= 0 ? String.fromCodePoint(cp) : String.fromCharCode(0xdc00 + b);
    i += n;
  }
  return out;
}

/**
 * Why `text` is not acceptable as a string field, or undefined when it is fine: a request whose bytes were not
 * UTF-8 reaches the service (see `deserializer`) with each bad byte escaped as a lone surrogate; services refuse
 * such a field with INVALID_ARGUMENT naming it (services/oracle/oracle.ts, services/generator/generator.ts).
 */
export function invalidUtf8(text: string): string | undefined {
  const bad = /[\uDC80-\uDCFF]/u.exec(text);
  if (!bad) return undefined;
  const byte = bad[0].charCodeAt(0) - 0xdc00;
  return `is not valid UTF-8 (byte 0x${byte.toString(16).toUpperCase()} at index ${bad.index} does not form a UTF-8 sequence)`;
}

/**
 * Decodes `bytes` with invalid UTF-8 in string fields escaped (decodeUtf8Escaped) instead of failing. protobuf-es
 * rejects invalid UTF-8 in proto3 strings, and a deserializer that throws makes grpc-js end the whole call with
 * INTERNAL "Error deserializing request"; decoded this way the request reaches the service, which refuses the field
 * by name and goes on with the stream. The library's text decoder is swapped only for this one synchronous call (no
 * other decode can interleave) and only after the strict decode failed, so every other decode stays strict. Such a
 * string, if echoed back unvalidated, is encoded with U+FFFD in place of each escaped byte.
 */
function fromBinaryLenient<D extends DescMessage>(schema: D, bytes: Uint8Array): MessageShape<D> {
  const strict = getTextEncoding();
  configureTextEncoding({
    ...strict,
    decodeUtf8: (utf8: Uint8Array) => {
      try {
        return strict.decodeUtf8(utf8, true);
      } catch {
        return decodeUtf8Escaped(utf8);
      }
    },
  });
  try {
    return fromBinary(schema, bytes);
  } finally {
    configureTextEncoding(strict);
  }
}

/** Strict decode; when that fails, a lenient one (invalid UTF-8 bytes escaped); the strict error if both fail. */
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
