import type { DescService } from "@bufbuild/protobuf";
import { Code, RpcError } from "../errors.js";
import type { ServiceImplementation } from "./implementation.js";

/**
 * An implementation whose every method answers UNIMPLEMENTED with `reason` — for a service whose work has not
 * landed yet, so that it is served (health, reflection) without ever making up a result.
 */
export function unimplemented<S extends DescService>(service: S, reason: string): ServiceImplementation<S> {
  const implementation: Record<string, unknown> = {};
  for (const method of service.methods) {
    const error = () => new RpcError(Code.UNIMPLEMENTED, `${service.typeName}/${method.name} is not implemented yet: ${reason}`);
    implementation[method.localName] =
      method.methodKind === "unary" || method.methodKind === "client_streaming"
        ? async () => {
            throw error();
          }
        : // biome-ignore lint/correctness/useYield: the stream fails before its first message
          async function* () {
            throw error();
          };
  }
  return implementation as ServiceImplementation<S>;
}
