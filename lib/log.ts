/**
 * The project's one logger: pino, JSON lines on stderr (stdout stays free for command output such as `--json`).
 * Level from SPPO_LOG_LEVEL (default "info").
 */
import { pino } from "pino";

export const log = pino(
  { level: process.env.SPPO_LOG_LEVEL ?? "info", base: { pid: process.pid } },
  pino.destination({ fd: 2, sync: true }),
);

export type Logger = typeof log;
