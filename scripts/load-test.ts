/**
 * Bounded load test of the oracle and the generator, on loopback only.
 *
 *   node --import tsx scripts/load-test.ts [--clients N] [--requests M] [--seconds S] [--target oracle|generator|both]
 *                                          [--window W] [--queue Q] [--backoff-ms B] [--help]
 *
 * Starts each service in its own process (`node bin/sppo.mjs serve oracle|generator --port 0`, host 127.0.0.1, metrics
 * off; the default task's models, assets/oracle and assets/policy), both with a small queue (`maxQueuedRequests` = Q,
 * oracle.maxQueuedRequests and generator.maxQueuedRequests) so that overload happens. Then N clients — each its own channel, one bidi stream (Compare
 * or Generate) per target, at most W requests unanswered at a time — send until M requests have been sent per target
 * or S seconds have passed, half-close, and wait (at most 30 s) for the answers still due. A client that is refused
 * (RESOURCE_EXHAUSTED) sends nothing for B ms (default 20), as a well-behaved client backs off.
 *
 * Prints one JSON object: per target, requests sent, answered OK, refused (RESOURCE_EXHAUSTED), other errors (by
 * code), answered twice, lost (no answer and no error), held load (OK answers per second), p50/p99 latency (of OK
 * answers and of all answers), and the server process's RSS when ready and its peak (VmHWM of /proc/PID/status).
 * Exits 1 when a request was lost or answered twice (or a server failed), 0 otherwise.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { Generator } from "../gen/sppo/v1/generator_pb.js";
import { PreferenceOracle } from "../gen/sppo/v1/oracle_pb.js";
import { Code, kindError, RpcError } from "../lib/errors.js";
import { isOverload } from "../lib/grpc/codes.js";
import { createClient } from "../lib/grpc/client.js";

const root = new URL("../", import.meta.url).pathname;

const USAGE = `Usage: node --import tsx scripts/load-test.ts [options]

Bounded load test, loopback only: starts \`sppo serve oracle\` and/or \`sppo serve generator\` (default task models) in their
own processes with a small queue, drives them with N concurrent clients, and prints one JSON summary per target:
requests sent, answered OK, refused RESOURCE_EXHAUSTED, other errors, lost, answered twice, held load (OK/s),
latency percentiles, and the server's RSS at ready and at peak. Exits 1 if a request was lost or answered twice.

Options:
  --clients N      concurrent clients, each its own channel and bidi stream (default 16)
  --requests M     requests per target in all, over all clients (default 2000)
  --seconds S      stop sending after S seconds, in (0, 3600] (default 20); answers still due get 30 s more
  --target T       oracle, generator or both (default both); targets are loaded one after the other
  --window W       requests unanswered per client at a time (default 8)
  --queue Q        the services' maxQueuedRequests (oracle and generator), small so overload happens (default 8)
  --backoff-ms B   a refused client sends nothing for B ms (default 20)
  --help           this text
`;

const GRACE_MS = 30_000;

type Target = "oracle" | "generator";

interface Options {
  clients: number;
  requests: number;
  seconds: number;
  targets: Target[];
  window: number;
  queue: number;
  /** After a RESOURCE_EXHAUSTED answer, a client sends nothing for this long (as a well-behaved client backs off). */
  backoffMs: number;
}

const parseOptions = (argv: string[]) =>
  parseArgs({
    args: argv,
    options: {
      clients: { type: "string", default: "16" },
      requests: { type: "string", default: "2000" },
      seconds: { type: "string", default: "20" },
      target: { type: "string", default: "both" },
      window: { type: "string", default: "8" },
      queue: { type: "string", default: "8" },
      "backoff-ms": { type: "string", default: "20" },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });

function options(argv: string[]): Options | "help" {
  let parsed: ReturnType<typeof parseOptions>;
  try {
    parsed = parseOptions(argv);
  } catch (err) {
    throw kindError("usage", (err as Error).message, { cause: err });
  }
  const { values } = parsed;
  if (values.help) return "help";
  const int = (name: string, raw: string | undefined, min: number) => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw kindError("usage", `--${name}: an integer ≥ ${min} is needed, got ${raw}`);
    return n;
  };
  const seconds = Number(values.seconds);
  if (!(seconds > 0 && seconds <= 3600)) throw kindError("usage", `--seconds: a number in (0, 3600] is needed, got ${values.seconds}`);
  const target = values.target;
  if (target !== "oracle" && target !== "generator" && target !== "both") throw kindError("usage", `--target: oracle, generator or both, got ${target}`);
  return {
    clients: int("clients", values.clients, 1),
    requests: int("requests", values.requests, 1),
    seconds,
    targets: target === "both" ? ["oracle", "generator"] : [target],
    window: int("window", values.window, 1),
    queue: int("queue", values.queue, 1),
    backoffMs: int("backoff-ms", values["backoff-ms"], 0),
  };
}

interface Server {
  name: Target;
  child: ChildProcess;
  port: number;
  lines: string[];
  exited: Promise<number | null>;
}

/** `sppo serve NAME --port 0` on 127.0.0.1; resolves once its "serving" log line names the port. */
async function startServer(name: Target, env: NodeJS.ProcessEnv): Promise<Server> {
  const child = spawn(process.execPath, ["bin/sppo.mjs", "serve", name, "--port", "0", "--metrics-port", "-1"], {
    cwd: root,
    stdio: ["ignore", "ignore", "pipe"],
    // The "serving" and "oracle ready" lines are read below: the server logs at info whatever level this process
    // inherited (the test runner sets SPPO_LOG_LEVEL=silent, which left the wait for "serving" to its time limit).
    env: { ...process.env, SPPO_LOG_LEVEL: "info", SPPO_SERVER__HOST: "127.0.0.1", SPPO_SERVER__DRAIN_DELAY_MS: "0", SPPO_SERVER__SHUTDOWN_GRACE_MS: "5000", ...env },
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const lines: string[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new RpcError(Code.UNAVAILABLE, `${name}: no "serving" line within 120 s:\n${lines.slice(-20).join("\n")}`)), 120_000);
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (line) => {
      if (lines.length < 2000) lines.push(line);
      try {
        const entry = JSON.parse(line) as { msg?: string; address?: string };
        if (entry.msg === "serving") {
          clearTimeout(timer);
          resolve(Number(String(entry.address).split(":").pop()));
        }
      } catch {
        // not a log line
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new RpcError(Code.UNAVAILABLE, `${name} exited with ${code} before serving:\n${lines.slice(-20).join("\n")}`));
    });
  });
  return { name, child, port, lines, exited };
}

/** VmRSS and VmHWM (peak RSS) of a process, in MiB, from /proc/PID/status. */
function memory(pid: number | undefined): { rssMiB: number; peakRssMiB: number } | undefined {
  if (pid === undefined) return undefined;
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN);
    return { rssMiB: round(kib("VmRSS") / 1024, 1), peakRssMiB: round(kib("VmHWM") / 1024, 1) };
  } catch {
    return undefined;
  }
}

/** The oracle's backend or the generator's engine, from the server's start-up log lines. */
function describeServer(server: Server): string | null {
  for (const line of server.lines) {
    try {
      const entry = JSON.parse(line) as { msg?: string; backend?: string; engine?: string };
      if (entry.msg === "oracle ready" && entry.backend) return entry.backend;
      if (entry.msg === "generator: base policy loaded" && entry.engine) return entry.engine;
    } catch {
      // not a log line
    }
  }
  return null;
}

async function stopServer(server: Server): Promise<number | null> {
  if (server.child.exitCode !== null) return server.child.exitCode;
  server.child.kill("SIGTERM");
  const timer = setTimeout(() => server.child.kill("SIGKILL"), 15_000);
  const code = await server.exited;
  clearTimeout(timer);
  return code;
}

const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return round(sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)], 1);
}

/** What happened to one target's requests. */
interface Tally {
  sent: number;
  ok: number;
  refused: number;
  otherErrors: Record<string, number>;
  answeredTwice: number;
  /** Answers whose request_id was never sent. */
  unknownAnswers: number;
  lost: number;
  okLatencies: number[];
  allLatencies: number[];
  firstSendAt: number;
  lastAnswerAt: number;
}

const codeName = (code: number) => Code[code] ?? String(code);

const PROMPTS = readFileSync(`${root}assets/prompts/default.jsonl`, "utf8")
  .split("\n")
  .filter((l) => l.trim() !== "")
  .map((l) => (JSON.parse(l) as { prompt: string }).prompt);
const CANDIDATES = ["the song is lovely .", "the song is awful and dull .", "the market is busy and bright .", "i do not know ."];

type Answer = { requestId: string; error?: { code: number; message: string } };

/**
 * One client: its own channel, one bidi stream, at most `window` requests unanswered. Requests are taken from the
 * target's shared budget (`budget.left`) until it is spent or `stopAt` has passed.
 */
async function runClient(target: Target, port: number, client: number, opts: Options, budget: { left: number }, stopAt: number, tally: Tally): Promise<void> {
  const address = `127.0.0.1:${port}`;
  // Each client its own channel and connection, as separate processes would have. No retries: an answer or an error
  // per request, as sent.
  const channel = { channelOptions: { "grpc.use_local_subchannel_pool": 1 }, maxAttempts: 1 };
  const outstanding = new Map<string, number>();
  const answered = new Set<string>();
  let wake: (() => void) | undefined;
  let sequence = 0;
  let finished = false;
  let pausedUntil = 0;
  async function* requests() {
    while (!finished && budget.left > 0 && performance.now() < stopAt) {
      const pause = Math.min(pausedUntil, stopAt) - performance.now();
      if (pause > 0) {
        await new Promise<void>((resolve) => setTimeout(resolve, pause));
        continue;
      }
      if (outstanding.size >= opts.window) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      budget.left--;
      const requestId = `${target}/${client}/${sequence++}`;
      const prompt = PROMPTS[(client * 7919 + sequence) % PROMPTS.length];
      const now = performance.now();
      outstanding.set(requestId, now);
      tally.sent++;
      if (tally.firstSendAt === 0) tally.firstSendAt = now;
      yield target === "oracle" ? { requestId, prompt, candidates: CANDIDATES } : { requestId, prompt, numSamples: 2, params: { maxNewTokens: 8 } };
    }
  }
  const record = (answer: Answer) => {
    const now = performance.now();
    const sentAt = outstanding.get(answer.requestId);
    if (sentAt === undefined) {
      if (answered.has(answer.requestId)) tally.answeredTwice++;
      else tally.unknownAnswers++;
      return;
    }
    outstanding.delete(answer.requestId);
    answered.add(answer.requestId);
    tally.lastAnswerAt = Math.max(tally.lastAnswerAt, now);
    const latency = now - sentAt;
    tally.allLatencies.push(latency);
    if (!answer.error) {
      tally.ok++;
      tally.okLatencies.push(latency);
    } else if (isOverload(answer.error.code)) {
      tally.refused++;
      pausedUntil = now + opts.backoffMs;
    }
    else tally.otherErrors[codeName(answer.error.code)] = (tally.otherErrors[codeName(answer.error.code)] ?? 0) + 1;
    wake?.();
  };
  // At the time bound, a sender waiting for room stops waiting (and stops sending).
  const stopTimer = setTimeout(() => wake?.(), Math.max(0, stopAt - performance.now()));
  const abort = new AbortController();
  const graceTimer = setTimeout(() => abort.abort(), Math.max(0, stopAt - performance.now()) + GRACE_MS);
  try {
    if (target === "oracle") {
      const c = createClient(PreferenceOracle, address, channel);
      try {
        for await (const r of c.compare(requests(), { signal: abort.signal })) record(r);
      } finally {
        c.close();
      }
    } else {
      const c = createClient(Generator, address, channel);
      try {
        for await (const r of c.generate(requests(), { signal: abort.signal })) record(r);
      } finally {
        c.close();
      }
    }
    // The stream ended OK: whatever is still outstanding got neither an answer nor an error.
    tally.lost += outstanding.size;
  } catch (err) {
    // The whole stream failed: each request still outstanding got that one error — unless we cut it off ourselves
    // after the grace period, in which case it got nothing.
    if (abort.signal.aborted) tally.lost += outstanding.size;
    else {
      const name = codeName(RpcError.from(err).code);
      tally.otherErrors[`stream:${name}`] = (tally.otherErrors[`stream:${name}`] ?? 0) + outstanding.size;
    }
  } finally {
    finished = true;
    clearTimeout(graceTimer);
    clearTimeout(stopTimer);
    wake?.();
    outstanding.clear();
  }
}

async function drive(server: Server, opts: Options) {
  const tally: Tally = { sent: 0, ok: 0, refused: 0, otherErrors: {}, answeredTwice: 0, unknownAnswers: 0, lost: 0, okLatencies: [], allLatencies: [], firstSendAt: 0, lastAnswerAt: 0 };
  const atReady = memory(server.child.pid);
  // Samples VmRSS while the load runs (VmHWM, read at the end, also covers start-up).
  let peakRssDuringLoad = atReady?.rssMiB ?? 0;
  const sampler = setInterval(() => {
    peakRssDuringLoad = Math.max(peakRssDuringLoad, memory(server.child.pid)?.rssMiB ?? 0);
  }, 50);
  const budget = { left: opts.requests };
  const stopAt = performance.now() + opts.seconds * 1000;
  const started = performance.now();
  await Promise.all(Array.from({ length: opts.clients }, (_, c) => runClient(server.name, server.port, c, opts, budget, stopAt, tally)));
  clearInterval(sampler);
  const atEnd = memory(server.child.pid);
  const elapsed = ((tally.lastAnswerAt || performance.now()) - (tally.firstSendAt || started)) / 1000;
  const otherErrors = Object.values(tally.otherErrors).reduce((a, b) => a + b, 0);
  const ok = tally.okLatencies.sort((a, b) => a - b);
  const all = tally.allLatencies.sort((a, b) => a - b);
  return {
    sent: tally.sent,
    answeredOk: tally.ok,
    refusedResourceExhausted: tally.refused,
    otherErrors,
    otherErrorsByCode: tally.otherErrors,
    answeredTwice: tally.answeredTwice + tally.unknownAnswers,
    lost: tally.lost,
    consistent: tally.sent === tally.ok + tally.refused + otherErrors + tally.lost,
    seconds: round(elapsed, 2),
    heldLoadPerSecond: elapsed > 0 ? round(tally.ok / elapsed, 1) : 0,
    latencyMs: { okP50: percentile(ok, 50), okP99: percentile(ok, 99), allP50: percentile(all, 50), allP99: percentile(all, 99) },
    server: {
      pid: server.child.pid,
      // What answered: the oracle's backend, the generator's engine (from their start-up log lines).
      runs: describeServer(server),
      rssAtReadyMiB: atReady?.rssMiB ?? null,
      peakRssDuringLoadMiB: round(Math.max(peakRssDuringLoad, atEnd?.rssMiB ?? 0), 1),
      peakRssMiB: atEnd?.peakRssMiB ?? null,
    },
  };
}

async function main(): Promise<number> {
  const opts = options(process.argv.slice(2));
  if (opts === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
  const env: Record<Target, NodeJS.ProcessEnv> = {
    // The default task's pairwise ONNX model (assets/oracle), a queue of Q requests over all streams.
    oracle: { SPPO_ORACLE__BACKEND: "pairwise-onnx", SPPO_ORACLE__MODEL_DIR: "assets/oracle", SPPO_ORACLE__MAX_QUEUED_REQUESTS: String(opts.queue) },
    // The default policy (assets/policy), a queue of Q requests over all streams: beyond it, RESOURCE_EXHAUSTED.
    generator: { SPPO_GENERATOR__MODEL_DIR: "assets/policy", SPPO_GENERATOR__MAX_QUEUED_REQUESTS: String(opts.queue) },
  };
  const servers: Server[] = [];
  const results: Record<string, unknown> = {};
  let failed = false;
  try {
    // Both start at once (separate processes); load runs against one at a time, so the figures do not mix.
    servers.push(...(await Promise.all(opts.targets.map((t) => startServer(t, env[t])))));
    for (const server of servers) {
      const result = await drive(server, opts);
      results[server.name] = result;
      if (result.lost > 0 || result.answeredTwice > 0 || !result.consistent) failed = true;
    }
  } finally {
    for (const server of servers) {
      const code = await stopServer(server);
      if (code !== 0) {
        failed = true;
        results[`${server.name}Exit`] = { code, lastLines: server.lines.slice(-10) };
      }
    }
  }
  const summary = {
    clients: opts.clients,
    requestsPerTarget: opts.requests,
    seconds: opts.seconds,
    windowPerClient: opts.window,
    backoffMsAfterRefusal: opts.backoffMs,
    maxQueuedRequests: opts.queue,
    ...results,
    ok: !failed,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    // A wrong command line: printed without a stack, with the usage, exit code 2.
    if (RpcError.is(err, "usage")) process.stderr.write(`load-test: ${err.message}\n${USAGE}`);
    else process.stderr.write(`load-test: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(2);
  },
);
