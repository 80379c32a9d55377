import { z } from "zod";

export { DEFAULT_METRICS_PORTS } from "./default-ports.js";

/** How every service is served (lib/grpc/serve.ts). */
export const serverConfigSchema = z
  .object({
    /** Interface to bind. @default "0.0.0.0" */
    host: z.string().default("0.0.0.0"),
    /** Port to bind; 0 picks a free one. Unset: the service's own default (generator 50051, oracle 50052, optimizer 50053). */
    port: z.number().int().min(0).max(65535).optional(),
    /**
     * Port of the Prometheus `/metrics` HTTP endpoint; 0 picks a free one, -1 turns it off. Unset: the process's own
     * default (DEFAULT_METRICS_PORTS: generator 9464, oracle 9465, optimizer 9466, the loop of `sppo run` 9467).
     */
    metricsPort: z.number().int().min(-1).max(65535).optional(),
    /** Largest message received or sent, in bytes. grpc-js's default is 4 MiB. @default 64 MiB */
    maxMessageBytes: z.number().int().positive().default(64 * 1024 * 1024),
    /** Close connections after this long so that clients re-resolve DNS and see new pods. @default 5 min */
    maxConnectionAgeMs: z.number().int().positive().default(5 * 60_000),
    /** Let in-flight calls finish this long after max_connection_age before closing. @default 30 s */
    maxConnectionAgeGraceMs: z.number().int().positive().default(30_000),
    /** Send a keepalive ping this often. @default 30 s */
    keepaliveTimeMs: z.number().int().positive().default(30_000),
    /** Drop the connection when a ping is not answered within this. @default 10 s */
    keepaliveTimeoutMs: z.number().int().positive().default(10_000),
    /**
     * On SIGTERM, health reports NOT_SERVING and calls are still accepted for this long, so that readiness probes
     * and load balancers move traffic away before the server stops accepting. @default 1 s
     */
    drainDelayMs: z.number().int().nonnegative().default(1_000),
    /** On SIGTERM: health NOT_SERVING, stop accepting, let in-flight calls finish up to this, then cancel. @default 10 s */
    shutdownGraceMs: z.number().int().nonnegative().default(10_000),
    /**
     * Bearer token every call of the project's services must carry (`authorization: Bearer <token>`); health and
     * reflection stay open for probes. Prefer `authTokenFile` (or SPPO_SERVER__AUTH_TOKEN) to a token in a file
     * that is checked in. @default unset: no token checked
     */
    authToken: z.string().min(16, "use at least 16 characters").optional(),
    /** File holding the bearer token (trailing whitespace ignored), e.g. a mounted Kubernetes Secret. */
    authTokenFile: z.string().min(1).optional(),
    /** TLS: this server's certificate and key; with clientCaFile, clients must present certificates (mTLS). */
    tls: z
      .object({ certFile: z.string().min(1), keyFile: z.string().min(1), clientCaFile: z.string().min(1).optional() })
      .strict()
      .optional(),
  })
  .strict();

export type ServerConfig = z.infer<typeof serverConfigSchema>;

/** How every client calls a service (lib/grpc/client.ts). */
export const clientConfigSchema = z
  .object({
    /** Deadline of a unary call. @default 30 s */
    deadlineMs: z.number().int().positive().default(30_000),
    /** Attempts of a call that failed with UNAVAILABLE (service-config retry policy), first one included. @default 5 */
    maxAttempts: z.number().int().min(1).max(5).default(5),
    /** First retry back-off. @default 100 ms */
    initialBackoffMs: z.number().int().positive().default(100),
    /** Largest retry back-off. @default 5 s */
    maxBackoffMs: z.number().int().positive().default(5_000),
    /** Largest message received or sent, in bytes. @default 64 MiB */
    maxMessageBytes: z.number().int().positive().default(64 * 1024 * 1024),
    /** Send a keepalive ping this often on idle connections. @default 30 s */
    keepaliveTimeMs: z.number().int().positive().default(30_000),
    /** Bearer token sent with every call (see server.authToken). */
    authToken: z.string().min(1).optional(),
    /** File holding the bearer token sent with every call. */
    authTokenFile: z.string().min(1).optional(),
    /** TLS: the CA that signs the servers' certificates; certFile/keyFile for mutual TLS. */
    tls: z
      .object({ caFile: z.string().min(1).optional(), certFile: z.string().min(1).optional(), keyFile: z.string().min(1).optional() })
      .strict()
      .optional(),
  })
  .strict();

export type ClientConfig = z.infer<typeof clientConfigSchema>;
