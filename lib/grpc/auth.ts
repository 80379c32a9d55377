/**
 * Bearer-token authentication: the server checks `authorization: Bearer <token>` on every call of the project's
 * services (not health or reflection, which Kubernetes probes and discovery tools call without credentials); the
 * client sends it. Tokens come from the config or a file (a mounted Secret), never from code.
 */
import { timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Metadata } from "@grpc/grpc-js";
import { Code, kindError, RpcError } from "../errors.js";

/** The token from `authToken` or `authTokenFile` (`what` names the config section in errors), or undefined. */
export function resolveToken(config: { authToken?: string; authTokenFile?: string }, what: string): string | undefined {
  if (config.authToken !== undefined && config.authTokenFile !== undefined) {
    throw kindError("config", `${what}: give authToken or authTokenFile, not both`, { field: what });
  }
  if (config.authTokenFile === undefined) return config.authToken;
  let token: string;
  try {
    token = readFileSync(config.authTokenFile, "utf8").trimEnd();
  } catch (err) {
    throw kindError("config", `${what}.authTokenFile ${config.authTokenFile}: ${(err as Error).message}`, { cause: err, field: `${what}.authTokenFile` });
  }
  if (token.length === 0) throw kindError("config", `${what}.authTokenFile ${config.authTokenFile}: the file is empty`, { field: `${what}.authTokenFile` });
  return token;
}

/** Throws UNAUTHENTICATED unless `metadata` carries the bearer `token` (compared in constant time). */
export function checkBearer(metadata: Metadata, token: string, path: string): void {
  const header = metadata.get("authorization")[0];
  const presented = typeof header === "string" && header.startsWith("Bearer ") ? Buffer.from(header.slice(7)) : undefined;
  const expected = Buffer.from(token);
  if (!presented || presented.length !== expected.length || !timingSafeEqual(presented, expected)) {
    throw new RpcError(Code.UNAUTHENTICATED, `${path}: ${presented ? "wrong" : "missing"} bearer token (send "authorization: Bearer <token>")`);
  }
}
