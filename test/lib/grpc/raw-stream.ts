/** Sends hand-built request bytes over a bidi stream, bypassing the typed client's serializer (for malformed input). */
import * as grpc from "@grpc/grpc-js";
import type { DescMethod, MessageShape } from "@bufbuild/protobuf";
import { deserializer, methodPath } from "../../../lib/grpc/definition.js";

/** `bytes` with every occurrence of the ASCII `marker` overwritten, byte for byte, by `replacement` (same length). */
export function overwrite(bytes: Uint8Array, marker: string, replacement: number[]): Buffer {
  const out = Buffer.from(bytes);
  const needle = Buffer.from(marker, "latin1");
  if (needle.length !== replacement.length) throw new Error("the replacement must be as long as the marker");
  let at = out.indexOf(needle);
  if (at < 0) throw new Error(`marker ${marker} not in the message`);
  while (at >= 0) {
    out.set(replacement, at);
    at = out.indexOf(needle, at + needle.length);
  }
  return out;
}

/** Writes each raw request in turn on one bidi call of `method`, half-closes, and collects every response. */
export async function rawBidi<M extends DescMethod>(target: string, method: M, requests: Uint8Array[]): Promise<MessageShape<M["output"]>[]> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  try {
    const call = client.makeBidiStreamRequest(methodPath(method), (b: Uint8Array) => Buffer.from(b), deserializer(method.output), new grpc.Metadata(), {
      deadline: Date.now() + 30_000,
    });
    const responses: MessageShape<M["output"]>[] = [];
    const done = new Promise<void>((resolve, reject) => {
      call.on("data", (r: MessageShape<M["output"]>) => responses.push(r));
      call.on("error", reject);
      call.on("end", resolve);
    });
    for (const r of requests) call.write(Buffer.from(r));
    call.end();
    await done;
    return responses;
  } finally {
    client.close();
  }
}
