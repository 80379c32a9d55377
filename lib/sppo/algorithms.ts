/**
 * The losses the optimizer trains with (`optimizer.algorithm`, `sppo compare-runs --algorithms`); their formulas are
 * in lib/sppo/losses.ts (DESIGN §2). Kept apart from the tensors and the config schema so that `sppo`'s command
 * declarations can name them without loading tfjs or zod.
 */
export const OPTIMIZER_ALGORITHMS = ["sppo", "sppo_hard", "dpo", "ipo"] as const;

/** One of the losses the optimizer trains with. */
export type OptimizerAlgorithm = (typeof OPTIMIZER_ALGORITHMS)[number];
