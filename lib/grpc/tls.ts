/**
 * Transport credentials. Plain-text unless certificate paths are configured; the TLS and mTLS options are
 * part of the server and client config sections.
 */
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { kindError } from "../errors.js";

export interface ServerCredentialsConfig {
  tls?: {
    /** PEM certificate chain of this server. */
    certFile: string;
    /** PEM private key of this server. */
    keyFile: string;
    /** PEM CA bundle: when set, clients must present a certificate signed by it (mutual TLS). */
    clientCaFile?: string;
  };
}

export interface ClientCredentialsConfig {
  tls?: {
    /** PEM CA bundle that signs the servers' certificates. */
    caFile?: string;
    /** PEM certificate and key of this client, for mutual TLS. */
    certFile?: string;
    keyFile?: string;
  };
}

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw kindError("config", `${what} ${path}: ${(err as Error).message}`, { cause: err, field: what });
  }
}

export function serverCredentials(config: ServerCredentialsConfig): grpc.ServerCredentials {
  if (!config.tls) return grpc.ServerCredentials.createInsecure();
  const { certFile, keyFile, clientCaFile } = config.tls;
  return grpc.ServerCredentials.createSsl(
    clientCaFile ? read(clientCaFile, "server.tls.clientCaFile") : null,
    [{ cert_chain: read(certFile, "server.tls.certFile"), private_key: read(keyFile, "server.tls.keyFile") }],
    Boolean(clientCaFile),
  );
}

export function channelCredentials(config: ClientCredentialsConfig): grpc.ChannelCredentials {
  if (!config.tls) return grpc.credentials.createInsecure();
  const { caFile, certFile, keyFile } = config.tls;
  if (Boolean(certFile) !== Boolean(keyFile)) throw kindError("config", "client.tls: certFile and keyFile must be given together", { field: "client.tls" });
  return grpc.credentials.createSsl(
    caFile ? read(caFile, "client.tls.caFile") : null,
    keyFile ? read(keyFile, "client.tls.keyFile") : null,
    certFile ? read(certFile, "client.tls.certFile") : null,
  );
}
