/**
 * What the trainer keeps between requests, as plain JSON (checkpoints store it as is: trainer.json's `trainer`).
 */
import type { RngState } from "../../lib/rng.js";
import type { OpenGroup, Unit } from "./grouping.js";
import type { IterationParams } from "./params.js";
import type { RunKey } from "./runs.js";
import type { VersionRecord } from "./versions.js";

/** The open iteration. */
export interface IterationState {
  iteration: number;
  totalPrompts: number;
  baseVersion: number;
  params: IterationParams;
  groups: Record<string, OpenGroup>;
  /** Data cursor: `exampleKey`s of every example consumed. */
  consumed: string[];
  /** Units waiting for the next epoch-1 step. */
  pending: Unit[];
  /** Every unit of the iteration (kept only when epochs > 1, for the later epochs). */
  units: Unit[];
  promptsDone: number;
  droppedGroups: number;
  unitsPerStep: number | null;
  totalSteps: number | null;
  warmupSteps: number | null;
  /** Optimizer steps taken in this iteration. */
  iterStep: number;
}

/** Everything but the weights and optimizer slots that a checkpoint must restore. */
export interface TrainerSnapshot {
  step: number;
  rng: RngState;
  versions: VersionRecord[];
  iteration: IterationState | null;
  lastIteration: number;
  /** The run the state belongs to; absent for the anonymous run (and in checkpoints older than run identities). */
  run?: RunKey;
}

/** A new iteration's state, before any example. */
export function newIteration(iteration: number, totalPrompts: number, baseVersion: number, params: IterationParams): IterationState {
  return {
    iteration,
    totalPrompts,
    baseVersion,
    params,
    groups: {},
    consumed: [],
    pending: [],
    units: [],
    promptsDone: 0,
    droppedGroups: 0,
    unitsPerStep: null,
    totalSteps: null,
    warmupSteps: null,
    iterStep: 0,
  };
}
