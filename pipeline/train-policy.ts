import { create } from "@bufbuild/protobuf";
import { concatMap, from, Observable, type OperatorFunction } from "rxjs";
import type { TrainRequest, TrainResponse } from "../gen/sppo/v1/optimizer_pb.js";
import {
  type IterationStart,
  IterationStartSchema,
  type TrainingExample,
  TrainingExampleSchema,
  TrainRequestSchema,
} from "../gen/sppo/v1/optimizer_pb.js";
import type { TelemetryEvent } from "../gen/sppo/v1/telemetry_pb.js";
import { BoundedQueue } from "../lib/streams/bounded-queue.js";
import type { ScoredSet } from "./types.js";

export interface TrainPolicyConfig {
  /** Opens the optimizer's Train stream. */
  train: (requests: AsyncIterable<TrainRequest>) => AsyncIterable<TrainResponse>;
  /** The iteration's opening message (iteration, total prompts, base version, hyper-parameters). */
  start: IterationStart;
  /** Examples queued for the optimizer before upstream waits. @default 256 */
  bufferedExamples?: number;
  /** Called once a set's examples are queued (the loop releases the set's in-flight permit here). */
  accepted?: (set: ScoredSet) => void;
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
 * Example: `scored$.pipe(trainPolicy({ train: (r) => optimizer.train(r), start }))`
 * @return the optimizer's telemetry events; completes when the optimizer has published the iteration's policy
 */
export function trainPolicy(config: TrainPolicyConfig): OperatorFunction<ScoredSet, TelemetryEvent> {
  return (source) =>
    new Observable<TelemetryEvent>((subscriber) => {
      const queue = new BoundedQueue<TrainRequest>(config.bufferedExamples ?? 256);
      const iteration = config.start.iteration;
      void queue.push(create(TrainRequestSchema, { kind: { case: "start", value: create(IterationStartSchema, config.start) } }));
      const feeding = source
        .pipe(
          concatMap((set) =>
            from(
              (async () => {
                for (const example of trainingExamples(set, iteration)) await queue.push(create(TrainRequestSchema, { kind: { case: "example", value: example } }));
                config.accepted?.(set);
              })(),
            ),
          ),
        )
        .subscribe({
          error: (err) => {
            queue.fail(err);
            subscriber.error(err);
          },
          complete: () => {
            void queue.push(create(TrainRequestSchema, { kind: { case: "end", value: { iteration } } })).then(() => queue.end());
          },
        });
      (async () => {
        for await (const response of config.train(queue)) if (response.event) subscriber.next(response.event);
        subscriber.complete();
      })().catch((err) => subscriber.error(err));
      return () => {
        feeding.unsubscribe();
        queue.end();
      };
    });
}
