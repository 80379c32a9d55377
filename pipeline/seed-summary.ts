/**
 * One measurement over seeds, as `sppo compare-runs` reports it: the median (what the comparison is read by: one
 * lucky seed cannot move it), the mean, the range, and every seed's value in seed order (so that two algorithms can
 * be compared seed by seed: within a seed they share prompts, splits and sampling seeds).
 */
export interface SeedSummary {
  median: number;
  mean: number;
  min: number;
  max: number;
  /** One per seed, in the order of the comparison's `seeds`. */
  values: number[];
}

/** Summarises the values of one measurement over seeds; the median of an even count is the mean of the middle two. */
export function seedSummary(values: readonly number[]): SeedSummary {
  if (values.length === 0) throw new RangeError("seedSummary: no values");
  for (const [i, v] of values.entries()) if (!Number.isFinite(v)) throw new RangeError(`seedSummary: value ${i} is not finite (${v})`);
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return {
    median: sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2,
    mean: values.reduce((a, b) => a + b, 0) / values.length,
    min: sorted[0],
    max: sorted[sorted.length - 1],
    values: [...values],
  };
}
