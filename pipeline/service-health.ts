/**
 * The health of the services a loop uses, as telemetry: one grpc.health.v1 Health/Watch stream per service (the
 * server pushes each change, nothing is polled), and a ServiceHealth event whenever a service's state changes. A
 * broken stream reports UNREACHABLE and is opened again once the channel connects (grpc-js reconnects with
 * back-off), so a restarted replica shows as SERVING again.
 *
 * Health is a foreign contract (grpc-health-check ships its .proto): its client is built from that file with
 * proto-loader, as any other language's client would be, rather than re-declared here.
 */
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { ServingState } from "../gen/sppo/v1/telemetry_pb.js";
import { channelCredentials, type ClientCredentialsConfig } from "../lib/grpc/tls.js";
import type { TelemetryHub } from "./telemetry.js";

export interface WatchedService {
  /** "generator", "oracle" or "optimizer". */
  name: string;
  /** The address the loop dials. */
  address: string;
  /** The gRPC service whose status is watched (e.g. "sppo.v1.Generator"). */
  typeName: string;
  /** Started by the loop in its own process. */
  embedded: boolean;
}

interface HealthWatchCall extends grpc.ClientReadableStream<{ status: string }> {}
type HealthClient = grpc.Client & { watch(request: { service: string }): HealthWatchCall };
type HealthClientClass = new (target: string, credentials: grpc.ChannelCredentials, options: grpc.ChannelOptions) => HealthClient;

let healthClientClass: HealthClientClass | undefined;
function healthClient(): HealthClientClass {
  healthClientClass ??= (grpc.loadPackageDefinition(loadSync(healthProtoPath, { enums: String })) as unknown as { grpc: { health: { v1: { Health: HealthClientClass } } } }).grpc.health.v1.Health;
  return healthClientClass;
}

/** How long one wait for a broken channel to connect again lasts before it is renewed. */
const RECONNECT_WAIT_MS = 60_000;
/** Pause before watching again after a stream failed on a connected channel (so a failing server is not spun on). */
const RETRY_PAUSE_MS = 1_000;

/**
 * Emits a ServiceHealth event for each service as soon as its state is known and on every change after that.
 * @return stops watching (closes the channels)
 */
export function watchServiceHealth(hub: TelemetryHub, services: readonly WatchedService[], credentials: ClientCredentialsConfig = {}): () => void {
  const stops = services.map((service) => watchOne(hub, service, credentials));
  return () => {
    for (const stop of stops) stop();
  };
}

function watchOne(hub: TelemetryHub, service: WatchedService, credentials: ClientCredentialsConfig): () => void {
  const Health = healthClient();
  const client = new Health(service.address, channelCredentials(credentials), {
    // A service that comes back is seen within seconds (grpc-js would otherwise back off for up to 2 minutes).
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 5_000,
  });
  let stopped = false;
  let last: ServingState | undefined;
  let call: HealthWatchCall | undefined;
  let pause: NodeJS.Timeout | undefined;
  const report = (state: ServingState, message = "") => {
    if (stopped || state === last) return;
    last = state;
    hub.emit({ payload: { case: "serviceHealth", value: { service: service.name, address: service.address, embedded: service.embedded, state, message } } });
  };
  const reconnect = () => {
    if (stopped) return;
    client.waitForReady(Date.now() + RECONNECT_WAIT_MS, (err) => (err ? reconnect() : watch()));
  };
  const watch = () => {
    if (stopped) return;
    const current = client.watch({ service: service.typeName });
    call = current;
    current.on("data", (response: { status: string }) => {
      report(response.status === "SERVING" ? ServingState.SERVING : ServingState.NOT_SERVING, response.status === "SERVING" ? "" : response.status.toLowerCase().replace(/_/g, " "));
    });
    current.on("error", (err: grpc.ServiceError) => {
      if (stopped) return;
      if (err.code === grpc.status.UNIMPLEMENTED) {
        // A service of another implementation without Health/Watch: its health is not known, and not asked again.
        report(ServingState.UNSPECIFIED, "it does not serve grpc.health.v1 Watch");
        return;
      }
      report(ServingState.UNREACHABLE, err.details || err.message);
      pause = setTimeout(reconnect, RETRY_PAUSE_MS);
      pause.unref();
    });
  };
  watch();
  return () => {
    stopped = true;
    clearTimeout(pause);
    call?.cancel();
    client.close();
  };
}
