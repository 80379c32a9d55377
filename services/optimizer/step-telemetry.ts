/**
 * A train step's telemetry (TrainStep): its loss, the mean Δ = log πθ − log π_ref and log-likelihood of its chosen
 * and rejected responses, the mean SPPO target, gradient norm, learning rate and speed.
 */
import { create } from "@bufbuild/protobuf";
import { type TrainStep, TrainStepSchema } from "../../gen/sppo/v1/telemetry_pb.js";
import { type StepResult, type StepSettings, stepLayout } from "../../models/index.js";
import type { Unit } from "./grouping.js";

function mean(xs: readonly number[]): number {
  return xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length;
}

export interface StepRecord {
  /** Global step number (after this step). */
  step: number;
  epoch: number;
  units: readonly Unit[];
  settings: StepSettings;
  result: StepResult;
  /** Wall time of the step. */
  seconds: number;
}

/** The TrainStep event of one step. */
export function trainStepTelemetry({ step, epoch, units, settings, result, seconds }: StepRecord): TrainStep {
  // In the step's loss order, so that the means add up in the same order whatever the engine.
  const order = stepLayout(units.map((u) => u.samples), settings).flatMap((mb) => mb.origin);
  const seen = order.map(([g, i]) => ({ sample: units[g].samples[i], logprob: result.logprobs[g][i] }));
  const chosen = seen.filter((s) => s.sample.role === "chosen");
  const rejected = seen.filter((s) => s.sample.role === "rejected");
  const tokens = seen.reduce((acc, s) => acc + s.sample.prompt.length + s.sample.response.length, 0);
  return create(TrainStepSchema, {
    step: BigInt(step),
    epoch,
    loss: result.loss,
    chosenDelta: mean(chosen.map((s) => s.logprob - s.sample.ref)),
    rejectedDelta: mean(rejected.map((s) => s.logprob - s.sample.ref)),
    chosenLogprob: mean(chosen.map((s) => s.logprob)),
    rejectedLogprob: mean(rejected.map((s) => s.logprob)),
    target: mean(seen.map((s) => settings.eta * (s.sample.winRate - 0.5))),
    ...(chosen.length > 0 ? { chosenTarget: mean(chosen.map((s) => settings.eta * (s.sample.winRate - 0.5))) } : {}),
    ...(rejected.length > 0 ? { rejectedTarget: mean(rejected.map((s) => settings.eta * (s.sample.winRate - 0.5))) } : {}),
    gradNorm: result.gradNorm,
    learningRate: settings.learningRate,
    examplesPerSecond: seen.length / seconds,
    tokensPerSecond: tokens / seconds,
    examples: seen.length,
  });
}
