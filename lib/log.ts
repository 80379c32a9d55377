/**
 * The project's one logger: pino, JSON lines on stderr (stdout stays free for command output such as `--json`).
 * Level from SPPO_LOG_LEVEL (default "info"). `logTo(file)` sends the lines to a file instead, for as long as a
 * terminal shows something else on stderr (`sppo run`'s progress bars); every child logger follows.
 *
 * Worker threads (the optimizer trains in one) load their own copy of this module: their lines go to the main
 * thread over a BroadcastChannel and are written where the main thread writes its own, so no thread writes to the
 * terminal behind the progress bars.
 */
import { BroadcastChannel, isMainThread } from "node:worker_threads";
import { pino } from "pino";

const stderr = pino.destination({ fd: 2, sync: true });
let target: { write(line: string): unknown } = stderr;

const fromWorkers = new BroadcastChannel("sppo.log");
fromWorkers.unref();
if (isMainThread) {
  fromWorkers.onmessage = (message) => target.write(String((message as { data: unknown }).data));
} else {
  target = { write: (line: string) => fromWorkers.postMessage(line) };
}

export const log = pino({ level: process.env.SPPO_LOG_LEVEL ?? "info", base: { pid: process.pid } }, { write: (line: string) => target.write(line) });

export type Logger = typeof log;

/**
 * Appends log lines to `path` (created with its folder) until the returned function is called; then stderr again.
 * Writes are synchronous, so that a crash loses no line.
 */
export function logTo(path: string): () => void {
  const file = pino.destination({ dest: path, sync: true, mkdir: true, append: true });
  target = file;
  return () => {
    if (target === file) target = stderr;
    file.flushSync();
    file.end();
  };
}
