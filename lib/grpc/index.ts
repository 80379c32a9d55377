export { createClient, type CallOptions, type Client, type ClientOptions } from "./client.js";
export { methodPath, serviceDefinition } from "./definition.js";
export type { Handler, HandlerContext, ServiceImplementation } from "./implementation.js";
export { installShutdownSignals, mount, serve, type MountedService, type RunningServer, type ServeOptions } from "./serve.js";
