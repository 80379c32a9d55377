import { setTimeout as delay } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { concatMap, from, Observable, type OperatorFunction } from "rxjs";
import type { TrainRequest, TrainResponse } from "../gen/sppo/v1/optimizer_pb.js";
import { type IterationStart, type TrainingExample, TrainingExampleSchema, TrainRequestSchema } from "../gen/sppo/v1/optimizer_pb.js";
import type { TelemetryEvent } from "../gen/sppo/v1/telemetry_pb.js";
import { Code, RpcError } from "../lib/errors.js";
import { isConflict, isTransportFailure } from "../lib/grpc/codes.js";
import { log } from "../lib/log.js";
import { BoundedQueue } from "../lib/streams/bounded-queue.js";
import { Semaphore } from "../lib/streams/semaphore.js";
import { whenAborted } from "../lib/when-aborted.js";
import { type Journal, memoryJournal } from "./journal.js";
import type { ScoredSet } from "./types.js";

export interface TrainPolicyConfig {
  /** Opens the optimizer's Train stream. */
  train: (requests: AsyncIterable<TrainRequest>) => AsyncIterable<TrainResponse>;
  /** The iteration's opening message (iteration, total prompts, base version, hyper-parameters). */
  start: IterationStart;
  /**
   * Where the iteration's examples are recorded before they are sent; every Train stream (the first one included)
   * opens with what it holds, so a journal left by a stopped run is replayed first. @default a new memoryJournal()
   */
  journal?: Journal;
  /** Examples queued for the optimizer before upstream waits. @default 256 */
  bufferedExamples?: number;
  /** Called once a set's examples are queued (the loop releases the set's in-flight permit here). */
  accepted?: (set: ScoredSet) => void;
  /** Resolves once the optimizer is reachable (`client.waitForReady`); without it a broken stream ends the run. */
  ready?: (deadlineMs: number) => Promise<void>;
  /** How long to wait for the optimizer to come back after its stream broke, in ms. @default 300 000 */
  reconnectTimeoutMs?: number;
  /** Train streams opened again after a break, at most. @default 10 */
  maxReconnects?: number;
  /**
   * How long re-opens refused because the optimizer still holds the old stream (ABORTED) are tried again, in ms, in
   * all: a dropped connection is only noticed by the server after its keepalive timeout, or once the train step in
   * flight ends. These tries back off (250 ms doubling to 5 s) and do not count against `maxReconnects`.
   * @default reconnectTimeoutMs
   */
  conflictTimeoutMs?: number;
  /**
   * The run is stopping (SIGINT/SIGTERM): when the source completes with this aborted, the iteration is left open
   * instead of ended. The stream is half-closed without IterationEnd, and the operator completes once the optimizer
   * has taken every example sent (its stream ended), without a PolicyPublished; a broken stream is not re-opened.
   */
  stop?: AbortSignal;
}

/** The K training examples of one scored set. */
export function trainingExamples(set: ScoredSet, iteration: number): TrainingExample[] {
  return set.candidates.map((candidate, i) =>
    create(TrainingExampleSchema, {
      promptId: set.prompt.id,
      promptTokenIds: set.promptTokenIds,
      responseTokenIds: candidate.tokenIds,
      winRate: set.winRates[i],
      referenceLogprob: set.referenceLogprobs[i],
      iteration,
      sampleIndex: candidate.index,
      groupSize: set.candidates.length,
    }),
  );
}

/**
 * Streams an iteration's scored sets into the optimizer as they arrive (training starts with the first full
 * batch), and emits the optimizer's telemetry: a TrainStep per step, then the PolicyPublished of the new version.
 * Upstream waits while `bufferedExamples` examples are queued, so memory does not grow with the prompt count.
 *
 * If the Train stream breaks (the optimizer was restarted, the connection dropped), it is opened again once the
 * optimizer is back, and replays the iteration from the journal: the IterationStart, every example recorded so
 * far, then the live ones. The optimizer resumes from its last checkpoint and skips the examples it had consumed,
 * so each example is trained on once and the weights end as if nothing had happened.
 *
 * Example: `scored$.pipe(trainPolicy({ train: (r) => optimizer.train(r), start }))`
 * @return the optimizer's telemetry events; completes when the optimizer has published the iteration's policy, or,
 * stopping, when it has taken the examples sent
 */
export function trainPolicy(config: TrainPolicyConfig): OperatorFunction<ScoredSet, TelemetryEvent> {
  return (source) =>
    new Observable<TelemetryEvent>((subscriber) => {
      const iteration = config.start.iteration;
      const journal = config.journal ?? memoryJournal();
      const startRequest = create(TrainRequestSchema, { kind: { case: "start", value: config.start } });
      const endRequest = create(TrainRequestSchema, { kind: { case: "end", value: { iteration } } });
      const exampleRequest = (example: TrainingExample) => create(TrainRequestSchema, { kind: { case: "example", value: example } });
      // Held while a set is journaled and queued, and while a new stream is filled from the journal, so that the
      // live sets follow the replay in journal order.
      const lock = new Semaphore(1);
      let queue: BoundedQueue<TrainRequest> | undefined;
      let sourceDone = false;
      let stopped = false;
      /** The source completed while the run was stopping: the iteration stays open (no IterationEnd). */
      let suspended = false;

      /** Fills a new stream's queue: IterationStart, the journal, and IterationEnd when the source is done. */
      const fill = async (fresh: BoundedQueue<TrainRequest>) => {
        await lock.acquire();
        try {
          queue = fresh;
          await fresh.push(startRequest);
          for (const example of journal.replay()) await fresh.push(exampleRequest(example));
          if (sourceDone) {
            if (!suspended) await fresh.push(endRequest);
            fresh.end();
          }
        } catch {
          // the stream broke again while filling: the next one is filled anew
        } finally {
          lock.release();
        }
      };

      /** Aborted when the subscriber leaves, so that a back-off wait does not outlive the operator. */
      const teardown = new AbortController();

      // The first stream is opened (and takes the lock to fill itself) before the source is subscribed.
      (async () => {
        const maxReconnects = config.maxReconnects ?? 10;
        const reconnectTimeoutMs = config.reconnectTimeoutMs ?? 300_000;
        const conflictTimeoutMs = config.conflictTimeoutMs ?? reconnectTimeoutMs;
        let attempt = 0;
        let conflicts = 0;
        let conflictWaitedMs = 0;
        for (;;) {
          const current = new BoundedQueue<TrainRequest>(config.bufferedExamples ?? 256);
          try {
            const responses = config.train(current);
            void fill(current);
            let published = false;
            for await (const response of responses) {
              if (!response.event) continue;
              if (response.event.payload.case === "policyPublished") published = true;
              subscriber.next(response.event);
            }
            // An optimizer shutting down may end the stream cleanly, before the iteration was finished.
            if (!published && !suspended) throw new RpcError(Code.UNAVAILABLE, `the optimizer ended the Train stream of iteration ${iteration} before publishing its policy`);
            subscriber.complete();
            return;
          } catch (err) {
            current.fail(err);
            const rpc = RpcError.from(err);
            if (config.stop?.aborted) {
              // Stopping: what was scored is in the journal, which the next run replays; do not wait for the optimizer.
              log.warn({ iteration, err: rpc.message }, "optimizer stream broke while stopping: the journal keeps the scored sets");
              subscriber.complete();
              return;
            }
            // Worth opening the stream again: the optimizer or the connection went away, or the old stream is still being
            // wound down (a conflict) — not a refusal of what was sent.
            const reopenable = isTransportFailure(rpc.code) || isConflict(rpc.code);
            if (stopped || !config.ready || !reopenable) throw err;
            if (isConflict(rpc.code)) {
              // The old stream's connection is gone but the optimizer has not noticed yet (or its step in flight has
              // not ended): re-opening at once would be refused again, and used up the budget in a few seconds.
              const waitMs = Math.min(250 * 2 ** conflicts, 5_000);
              if (conflictWaitedMs + waitMs > conflictTimeoutMs) throw err;
              conflicts++;
              conflictWaitedMs += waitMs;
              log.warn({ iteration, conflicts, waitMs, err: rpc.message }, "the optimizer still holds the old Train stream: opening it again after a wait");
              const stop = config.stop ? AbortSignal.any([config.stop, teardown.signal]) : teardown.signal;
              await delay(waitMs, undefined, { signal: stop }).catch(() => {});
              if (config.stop?.aborted) {
                subscriber.complete();
                return;
              }
              if (stopped) return;
              continue;
            }
            if (attempt >= maxReconnects) throw err;
            attempt++;
            log.warn({ iteration, attempt, err: rpc.message }, "optimizer stream broke: opening it again once the optimizer is back, replaying the iteration");
            await Promise.race([config.ready(reconnectTimeoutMs), whenAborted(config.stop)]);
            if (config.stop?.aborted) {
              subscriber.complete();
              return;
            }
          }
        }
      })().catch((err) => subscriber.error(err));

      const feeding = source
        .pipe(
          concatMap((set) =>
            from(
              (async () => {
                const examples = trainingExamples(set, iteration);
                await lock.acquire();
                try {
                  journal.append(examples);
                  // A stream that breaks here fails the queue: the re-opened stream sends this set from the journal.
                  for (const example of examples) await queue?.push(exampleRequest(example)).catch(() => {});
                } finally {
                  lock.release();
                }
                config.accepted?.(set);
              })(),
            ),
          ),
        )
        .subscribe({
          error: (err) => {
            queue?.fail(err);
            subscriber.error(err);
          },
          complete: () => {
            void (async () => {
              await lock.acquire();
              sourceDone = true;
              suspended = config.stop?.aborted === true;
              if (!suspended) await queue?.push(endRequest).catch(() => {});
              queue?.end();
              lock.release();
            })();
          },
        });

      return () => {
        stopped = true;
        teardown.abort();
        feeding.unsubscribe();
        queue?.end();
      };
    });
}
