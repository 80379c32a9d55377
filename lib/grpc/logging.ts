/**
 * grpc-js's own log lines ("E No address added out of total 1 resolved", transport traces) go to the project's
 * logger instead of bare lines on stderr: JSON like every other line, in run.log while a terminal shows progress,
 * and silent where logs are. Installed once, by importing this module (lib/grpc/serve.ts and client.ts do).
 */
import * as grpc from "@grpc/grpc-js";
import { log } from "../log.js";

const text = (args: unknown[]) => args.map(String).join(" ").trim();

grpc.setLogger({
  error: (...args: unknown[]) => log.warn({ source: "grpc-js" }, text(args)),
  info: (...args: unknown[]) => log.debug({ source: "grpc-js" }, text(args)),
  debug: (...args: unknown[]) => log.debug({ source: "grpc-js" }, text(args)),
});
