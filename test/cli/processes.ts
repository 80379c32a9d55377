/** Running `sppo` commands as separate processes in tests, as a user would. */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";

export const root = new URL("../../", import.meta.url).pathname;

export interface Started {
  child: ChildProcess;
  /** stderr lines so far (pino JSON and anything else). */
  lines: string[];
  /** The exit code, once the process has exited (listened for from the start, so an early exit is not missed). */
  exited: Promise<number | null>;
}

/** How long a process may take to log that it is ready: generous, as a loaded 2-core machine loads models slowly. */
const READY_TIMEOUT_MS = 120_000;

/** Spawns `sppo ARGS` and resolves once a stderr JSON log line has msg `readyMsg`; also returns that entry. */
export async function startSppo(
  args: string[],
  readyMsg: string,
  env: NodeJS.ProcessEnv = {},
): Promise<Started & { ready: Record<string, unknown> }> {
  // The ready line is an info log line: the child logs at info whatever the test runner's quiet default.
  const child = spawn(process.execPath, ["bin/sppo.mjs", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SPPO_LOG_LEVEL: "info", ...env } });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const lines: string[] = [];
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    // A process that never got ready is the caller's to clean up only if it is returned: kill it here, or its open
    // pipes keep the test runner waiting forever.
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`sppo ${args.join(" ")}: no "${readyMsg}" line within ${READY_TIMEOUT_MS / 1000} s:\n${lines.join("\n")}`));
    }, READY_TIMEOUT_MS);
    createInterface({ input: child.stderr! }).on("line", (line) => {
      lines.push(line);
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        if (entry.msg === readyMsg) {
          clearTimeout(timer);
          resolve(entry);
        }
      } catch {
        // not a log line
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`sppo ${args.join(" ")} exited with ${code}:\n${lines.join("\n")}`));
    });
  });
  return { child, lines, ready, exited };
}

/** `sppo serve NAME --port 0`: resolves with the bound port. */
export async function startServe(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Started & { port: number; ready: Record<string, unknown> }> {
  const started = await startSppo(["serve", ...args], "serving", env);
  return { ...started, port: Number(String(started.ready.address).split(":").pop()) };
}

/**
 * Several `sppo serve` at once: each start-up is mostly one core's work (loading modules and models), so on a 2-core
 * machine they overlap instead of queueing. Each one that started is pushed to `started` (the caller's clean-up)
 * before the first failure, if any, is thrown; one that failed to start was killed by `startSppo`.
 */
export async function startServeAll(
  list: { args: string[]; env?: NodeJS.ProcessEnv }[],
  started: { child: ChildProcess }[],
): Promise<(Started & { port: number; ready: Record<string, unknown> })[]> {
  const results = await Promise.allSettled(list.map(({ args, env }) => startServe(args, env)));
  const served = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  started.push(...served);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
  return served;
}
