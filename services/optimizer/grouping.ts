/**
 * From training examples to training units: each example is checked (INVALID_ARGUMENT naming the field), collected
 * into its prompt's open group, and a group that holds `group_size` examples becomes a unit — the prompt's chosen
 * and rejected responses (lib/sppo `selectChosenRejected`), or all K in sample order. Open groups are plain JSON
 * (they go into checkpoints as they are).
 */
import type { TrainingExample } from "../../gen/sppo/v1/optimizer_pb.js";
import { invalidArgument } from "../../lib/errors.js";
import { type PairSelectionMode, selectChosenRejected } from "../../lib/sppo/selection.js";
import type { StepSample } from "../../models/index.js";

/** One response as the trainer keeps it (a StepSample with its role, for telemetry). */
export interface Sample extends StepSample {
  prompt: number[];
  response: number[];
  role: "chosen" | "rejected" | "other";
}

/** One prompt's selected responses: [chosen, rejected], or all K in sample order (roles marked). */
export interface Unit {
  promptId: string;
  samples: Sample[];
}

/** A prompt whose examples are still arriving. */
export interface OpenGroup {
  groupSize: number;
  examples: { sampleIndex: number; prompt: number[]; response: number[]; winRate: number; ref: number }[];
}

/** What an example must fit: the policy's vocabulary and context, and the selection's smallest group. */
export interface ExampleLimits {
  vocabSize: number;
  contextLength: number;
  selection: PairSelectionMode;
}

/** The data cursor's key of an example: its prompt and sample index. */
export function exampleKey(promptId: string, sampleIndex: number): string {
  return `${promptId}\u0000${sampleIndex}`;
}

/** Checks one example's fields; throws INVALID_ARGUMENT naming the first bad one. */
export function checkExample(ex: TrainingExample, limits: ExampleLimits): void {
  if (ex.promptId === "") throw invalidArgument("example.prompt_id", "must not be empty");
  const minGroup = limits.selection === "chosen_rejected" ? 2 : 1;
  if (ex.groupSize < minGroup) throw invalidArgument("example.group_size", `must be ≥ ${minGroup}, got ${ex.groupSize}`);
  if (ex.sampleIndex >= ex.groupSize) throw invalidArgument("example.sample_index", `${ex.sampleIndex} is not below group_size ${ex.groupSize}`);
  if (ex.promptTokenIds.length === 0) throw invalidArgument("example.prompt_token_ids", "must not be empty (prepend BOS)");
  if (ex.responseTokenIds.length === 0) throw invalidArgument("example.response_token_ids", "must not be empty");
  const vocab = limits.vocabSize;
  for (const [name, ids] of [
    ["prompt_token_ids", ex.promptTokenIds],
    ["response_token_ids", ex.responseTokenIds],
  ] as const) {
    const bad = ids.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
    if (bad >= 0) throw invalidArgument(`example.${name}[${bad}]`, `token id ${ids[bad]} is outside the vocabulary [0, ${vocab})`);
  }
  const length = ex.promptTokenIds.length + ex.responseTokenIds.length;
  if (length > limits.contextLength) {
    throw invalidArgument("example", `prompt + response is ${length} tokens, longer than the policy's context ${limits.contextLength}`);
  }
  if (!(ex.winRate >= 0 && ex.winRate <= 1)) throw invalidArgument("example.win_rate", `must be in [0, 1], got ${ex.winRate}`);
  // A summed log-prob is ≤ 0; allow float noise from another engine.
  if (!(Number.isFinite(ex.referenceLogprob) && ex.referenceLogprob <= 1e-3)) {
    throw invalidArgument("example.reference_logprob", `must be a finite log-probability ≤ 0, got ${ex.referenceLogprob}`);
  }
}

/**
 * Adds a checked example to its prompt's group in `groups`. When that completes the group, the group is removed and
 * its unit returned; otherwise null. A group_size that differs from the prompt's earlier examples is INVALID_ARGUMENT
 * (and nothing is added).
 */
export function groupExample(groups: Record<string, OpenGroup>, ex: TrainingExample, mode: PairSelectionMode): Unit | null {
  let group = groups[ex.promptId];
  if (!group) group = groups[ex.promptId] = { groupSize: ex.groupSize, examples: [] };
  if (group.groupSize !== ex.groupSize) {
    throw invalidArgument("example.group_size", `prompt ${ex.promptId} had group_size ${group.groupSize}, now ${ex.groupSize}`);
  }
  group.examples.push({
    sampleIndex: ex.sampleIndex,
    prompt: [...ex.promptTokenIds],
    response: [...ex.responseTokenIds],
    winRate: ex.winRate,
    ref: ex.referenceLogprob,
  });
  if (group.examples.length < group.groupSize) return null;
  delete groups[ex.promptId];
  return makeUnit(ex.promptId, group, mode);
}

/** A complete group's unit: [chosen, rejected] (argmax / argmin P̂), or all K in sample order with roles marked. */
export function makeUnit(promptId: string, group: OpenGroup, mode: PairSelectionMode): Unit {
  const sorted = [...group.examples].sort((a, b) => a.sampleIndex - b.sampleIndex);
  const { chosen, rejected } = sorted.length >= 2 ? selectChosenRejected(sorted.map((e) => e.winRate)) : { chosen: 0, rejected: -1 };
  const toSample = (e: OpenGroup["examples"][number], i: number): Sample => ({
    prompt: e.prompt,
    response: e.response,
    winRate: e.winRate,
    ref: e.ref,
    role: i === chosen ? "chosen" : i === rejected ? "rejected" : "other",
  });
  if (mode === "all") return { promptId, samples: sorted.map(toSample) };
  return { promptId, samples: [toSample(sorted[chosen], chosen), toSample(sorted[rejected], rejected)] };
}
