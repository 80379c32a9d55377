/**
 * The shape every benchmark row group shares. A row group is a module in bench/ whose default export is a
 * `BenchGroup`; bench/run.ts finds it by file name, so adding rows means adding one file.
 */

/** One printed line of `npm run bench`. */
export interface BenchRow {
  /** Dotted name, group first, e.g. "engine.train_tokens_per_s". */
  metric: string;
  value: number;
  /** Unit of `value`, e.g. "tokens/s", "ms", "GFLOP/s". */
  unit: string;
  /** PyTorch's value of the same work in the same run, where measured. */
  torch?: number;
  /** value ÷ torch. */
  ratio?: number;
  [key: string]: unknown;
}

export interface BenchOptions {
  /** Fewer repeats (smoke runs, CI). */
  quick: boolean;
}

/** A group of rows; may print progress on stderr, never on stdout. */
export type BenchGroup = (options: BenchOptions) => Promise<BenchRow[]>;
