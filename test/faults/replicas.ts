/**
 * Two replicas each of the generator and the oracle, and one optimizer, as `sppo serve` processes on loopback, with
 * `sppo run` driving them over round_robin targets: the set-up of the replica fault tests (replica-kill,
 * replica-hang), and what they read back.
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type startServe, startServeAll } from "../cli/processes.js";
import { freePort, type SppoProcess, spawnSppo, type Task } from "./task.js";

type Served = Awaited<ReturnType<typeof startServe>>;
export type Replica = Served & { metricsPort: number };

export interface ReplicaSet {
  optimizerPort: number;
  replicas: Record<"generator" | "oracle", Replica[]>;
  /** `sppo run` of the task against the replicas, into `out`. */
  run(out: string): SppoProcess;
}

/** Starts the optimizer and the replicas, all at once (each pushed to `started`, for the test's clean-up). */
export async function startReplicaSet(task: Task, started: { child: ChildProcess }[]): Promise<ReplicaSet> {
  const optimizerPort = await freePort();
  // Four more, distinct (each is free again once freePort returns, so the OS may hand one out twice).
  const metricsPorts: number[] = [];
  while (metricsPorts.length < 4) {
    const port = await freePort();
    if (port !== optimizerPort && !metricsPorts.includes(port)) metricsPorts.push(port);
  }
  // All five start at once: the generators pull from the optimizer only when a request pins a version they lack.
  const names = ["generator", "generator", "oracle", "oracle"] as const;
  const [, ...served] = await startServeAll(
    [
      {
        args: ["optimizer", "--config", task.config, "--port", String(optimizerPort)],
        env: { SPPO_OPTIMIZER__CHECKPOINT_DIR: join(task.dir, "optimizer", "checkpoints"), SPPO_OPTIMIZER__POLICY_DIR: join(task.dir, "optimizer", "policies") },
      },
      ...names.map((name, i) => ({
        args: [name, "--config", task.config, "--port", "0", "--metrics-port", String(metricsPorts[i])],
        env: { SPPO_GENERATOR__OPTIMIZER_TARGET: `127.0.0.1:${optimizerPort}` },
      })),
    ],
    started,
  );
  const replicas: Record<"generator" | "oracle", Replica[]> = { generator: [], oracle: [] };
  for (const [i, replica] of served.entries()) replicas[names[i]].push({ ...replica, metricsPort: metricsPorts[i] });
  const target = (list: Served[]) => `ipv4:${list.map((r) => `127.0.0.1:${r.port}`).join(",")}`;
  return {
    optimizerPort,
    replicas,
    run: (out) => {
      const run = spawnSppo(["run", "--config", task.config, "--out", out, "--generator", target(replicas.generator), "--oracle", target(replicas.oracle), "--optimizer", `127.0.0.1:${optimizerPort}`]);
      started.push(run);
      return run;
    },
  };
}

/** The first of `replicas` serving at least one `method` stream right now (its Prometheus in-flight gauge). */
export async function replicaWithStream<R extends { metricsPort: number }>(replicas: R[], method: string): Promise<R> {
  for (const replica of replicas) {
    const text = await (await fetch(`http://127.0.0.1:${replica.metricsPort}/metrics`)).text();
    const open = new RegExp(`sppo_grpc_server_in_flight\\{method="[^"]*/${method}"\\} (\\d+)`).exec(text);
    if (open && Number(open[1]) >= 1) return replica;
  }
  throw new Error(`no replica serves a ${method} stream`);
}

/** The first of `list` that serves a `method` stream, polled until one does (the run failing ends the wait). */
export async function firstReplicaWithStream<R extends Replica>(list: R[], method: string, run: SppoProcess): Promise<R> {
  for (const deadline = Date.now() + 120_000; Date.now() < deadline && run.child.exitCode === null; ) {
    try {
      return await replicaWithStream(list, method);
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  throw new Error(`no replica served a ${method} stream before the run ended or 120 s passed:\n${run.output()}`);
}

/** Examples the optimizer reported training on, per iteration (from the TrainStep events in metrics.jsonl). */
export function trainedExamples(out: string): Map<number, number> {
  const perIteration = new Map<number, number>();
  for (const line of readFileSync(join(out, "metrics.jsonl"), "utf8").split("\n")) {
    if (!line.includes('"trainStep"')) continue;
    const event = JSON.parse(line) as { iteration?: number; trainStep: { examples?: number } };
    perIteration.set(event.iteration ?? 0, (perIteration.get(event.iteration ?? 0) ?? 0) + (event.trainStep.examples ?? 0));
  }
  return perIteration;
}

/** Log lines of `output` with message `msg`, parsed. */
export function logEntries<T>(output: string, msg: string): T[] {
  return output
    .split("\n")
    .filter((l) => l.includes(`"msg":"${msg}"`))
    .map((l) => JSON.parse(l) as T);
}
