/**
 * A small self-play task for the fault tests, written into a temporary directory: a tiny policy, a prompt file and
 * one config shared by every process (`sppo serve …`, `sppo run`). Each stage runs one prompt at a time, so that
 * the examples reach the optimizer in prompt order and two runs of the task train bit-identical weights; that is
 * what lets a test compare an interrupted run with an uninterrupted one.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { initBackend } from "../../models/index.js";
import { root } from "../cli/processes.js";
import { WORDS, writeTinyPolicy } from "../services/generator/fixtures.js";

export interface Task {
  dir: string;
  config: string;
  /** Prompts per iteration. */
  perIteration: number;
  iterations: number;
}

/** Writes the task; `pipeline`, `optimizer`, `generator` and `client` override the config's sections. */
export async function makeTask(
  name: string,
  options: { perIteration?: number; iterations?: number; pipeline?: object; optimizer?: object; generator?: object; client?: object } = {},
): Promise<Task> {
  const dir = mkdtempSync(join(tmpdir(), `sppo-fault-${name}-`));
  mkdirSync(join(dir, "policy"));
  await initBackend("auto"); // the fixture makes tensors: the backend must be ready first
  writeTinyPolicy(join(dir, "policy"), 17);
  const perIteration = options.perIteration ?? 48;
  const iterations = options.iterations ?? 2;
  const evalPrompts = 4;
  const subjects = WORDS.filter((w) => !["the", "is", "a", "and", "me", "about", "tell"].includes(w));
  const count = perIteration * iterations + evalPrompts;
  writeFileSync(join(dir, "prompts.jsonl"), `${Array.from({ length: count }, (_, i) => JSON.stringify({ prompt: `tell me about the ${subjects[i % subjects.length]} ${subjects[(i * 7) % subjects.length]}` })).join("\n")}\n`);
  const config = join(dir, "config.yaml");
  writeFileSync(
    config,
    stringify({
      server: { metricsPort: -1, drainDelayMs: 0, shutdownGraceMs: 500 },
      client: { maxAttempts: 1, ...options.client },
      generator: { modelDir: join(dir, "policy"), sampling: { maxNewTokens: 6 }, ...options.generator },
      oracle: { backend: "synthetic-adjectives" },
      optimizer: { modelDir: join(dir, "policy"), learningRate: 1e-3, optimizer: "adam", batchSize: 8, eta: 2, warmupRatio: 0, ...options.optimizer },
      pipeline: {
        prompts: join(dir, "prompts.jsonl"),
        iterations,
        promptsPerIteration: perIteration,
        evalPrompts,
        evalSamples: 1,
        samplesPerPrompt: 3,
        maxNewTokens: 6,
        generateConcurrency: 1,
        compareConcurrency: 1,
        telemetryPort: -1,
        progress: false,
        reconnectTimeoutMs: 60_000,
        ...options.pipeline,
      },
    }),
  );
  return { dir, config, perIteration, iterations };
}

/** A port free right now (the OS picks it), for a process that must come back on the same address. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface SppoProcess {
  child: ChildProcess;
  /** stdout and stderr so far. */
  output: () => string;
  exited: Promise<number | null>;
}

/** Spawns `sppo ARGS` with its output collected. */
export function spawnSppo(args: string[], env: NodeJS.ProcessEnv = {}): SppoProcess {
  // The tests read the child's info log lines, whatever the test runner's quiet default.
  const child = spawn(process.execPath, ["bin/sppo.mjs", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SPPO_LOG_LEVEL: "info", ...env } });
  let text = "";
  child.stdout!.on("data", (d) => (text += d));
  child.stderr!.on("data", (d) => (text += d));
  const exited = once(child, "exit").then(([code]) => code as number | null);
  return { child, output: () => text, exited };
}

/** Waits for `condition`, polling every 20 ms; fails naming `what` after `timeoutMs`. */
export async function waitFor(what: string, condition: () => boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The journal's lines of `iteration` in run directory `out` (0 when it does not exist yet). */
export function journalLines(out: string, iteration: number): string[] {
  const path = join(out, "journal", `iteration-${iteration}.jsonl`);
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8").split("\n").filter((l) => l.trim() !== "");
}

/** Prompt id → how many whole groups of it the journal of `iteration` holds. */
export function journaledGroups(out: string, iteration: number): Map<string, number> {
  const perPrompt = new Map<string, { examples: number; groupSize: number }>();
  for (const line of journalLines(out, iteration)) {
    const ex = JSON.parse(line) as { promptId: string; groupSize: number };
    const entry = perPrompt.get(ex.promptId) ?? { examples: 0, groupSize: ex.groupSize };
    entry.examples++;
    perPrompt.set(ex.promptId, entry);
  }
  return new Map([...perPrompt].map(([id, e]) => [id, e.examples / e.groupSize]));
}

export interface RunSummaryFile {
  iterations: { iteration: number; prompts: number; skippedPrompts: number; resumedPrompts?: number; policyVersion: number; policySha256: string }[];
}

export function readSummary(out: string): RunSummaryFile {
  return JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as RunSummaryFile;
}

/** Checkpoint directory names in `dir` and in its runs' folders (`runs/<run id>/`, services/optimizer/runs.ts), oldest first. */
export function checkpointNames(dir: string): string[] {
  const names = (d: string) => (existsSync(d) ? readdirSync(d).filter((n) => n.startsWith("ckpt-")) : []);
  const runs = join(dir, "runs");
  return [...names(dir), ...(existsSync(runs) ? readdirSync(runs).flatMap((run) => names(join(runs, run))) : [])].sort();
}

/** `sppo run` of the task with embedded services into `out`; resolves with its summary (an uninterrupted reference). */
export async function referenceRun(task: Task, out: string): Promise<RunSummaryFile> {
  const run = spawnSppo(["run", "--config", task.config, "--out", out]);
  const code = await run.exited;
  if (code !== 0) throw new Error(`reference run exited with ${code}:\n${run.output()}`);
  return readSummary(out);
}
