/**
 * How the trainer's logic meets a training engine (models/ `TrainStep`). The logic is written as generators that
 * yield each step (its units and settings) and receive its result, so that one piece of logic runs a synchronous
 * engine inside a synchronous call (`runSteps`: the trainer's `start`/`addExample`/`end`) and any engine, one that
 * answers with promises included, inside an asynchronous one (`runStepsAsync`: `handleAsync`, the service's path).
 */
import type { StepResult, StepSettings, TrainStep } from "../../models/index.js";
import type { Unit } from "./grouping.js";

/** A step the trainer's logic hands to the engine. */
export interface StepJob {
  units: Unit[];
  settings: StepSettings;
}

/** The trainer's logic between two engine steps: yields each step, receives its result, returns its value. */
export type Stepping<T> = Generator<StepJob, T, StepResult>;

/** Runs `logic` with a synchronous engine; an asynchronous one is a TypeError naming `handleAsync`. */
export function runSteps<T>(logic: Stepping<T>, engine: TrainStep, step: (job: StepJob) => StepResult | Promise<StepResult>): T {
  for (let next = logic.next(); ; ) {
    if (next.done) return next.value;
    if (!engine.synchronous) throw new TypeError(`the ${engine.name} train step is asynchronous: use handleAsync`);
    next = logic.next(step(next.value) as StepResult);
  }
}

/** Runs `logic` with any engine, awaiting each step. */
export async function runStepsAsync<T>(logic: Stepping<T>, step: (job: StepJob) => StepResult | Promise<StepResult>): Promise<T> {
  for (let next = logic.next(); ; ) {
    if (next.done) return next.value;
    next = logic.next(await step(next.value));
  }
}
