/**
 * Batched sampling with a KV cache. Prompts are left-padded to a common length (padding masked, positions counted
 * from each row's first real token), prefilled in one pass, then decoded one token per step for every row. Each
 * row draws from its own seeded generator — (seed, streamOffset + row), or the row's own (seed, stream) from `rows`
 * — so results are reproducible and a row's draws do not depend on the other rows. Each response's log-prob is the
 * policy's, at temperature 1, whatever temperature/top-p/top-k shaped the draw: that is what scoring computes, and
 * what SPPO's reference log-probs are.
 */
import * as tf from "@tensorflow/tfjs";
import type { SamplingParams } from "../gen/sppo/v1/generator_pb.js";
import { contextLength } from "./config.js";
import { type CausalLM, disposeCache, type KVCache } from "./model.js";
import { createRng, type Rng } from "../lib/rng.js";

/**
 * Options of one sampling run. The knobs of the draw are sppo.v1.SamplingParams's own fields (the one sampling type
 * from config to engine): `temperature` (0 = greedy; @default 1), `topP` (nucleus mass, 1 = off; @default 1), `topK`
 * (0 = off; @default 0), `maxNewTokens` (EOS included; @default 64). The rest is how a run draws and pads.
 */
export interface SampleOptions extends Pick<SamplingParams, "temperature" | "topP" | "topK" | "maxNewTokens"> {
  /** Seed of the per-row generators. @default 0 */
  seed?: number;
  /** Token that ends a response (it is kept in `tokenIds` and counted in `logprob`); undefined: never stop early. */
  eosId?: number;
  /** Id written into padding positions (masked; its value does not matter). @default 0 */
  padId?: number;
  /** First stream index of the per-row generators (row b uses stream streamOffset + b). @default 0 */
  streamOffset?: number;
  /**
   * Per-row generators, one entry per prompt: row b draws from `createRng(rows[b].seed, rows[b].stream)`, overriding
   * `seed` and `streamOffset`. Lets rows of different requests share one run, each drawing exactly as it would alone
   * (a request with seed s alone is rows { seed: s, stream: 0 … K-1 }). Undefined: (seed, streamOffset + b).
   */
  rows?: readonly RowSeed[];
}

/** The generator of one row: `createRng(seed, stream)`. */
export interface RowSeed {
  seed: number;
  stream: number;
}

/** One sampled response. */
export interface SampleResult {
  /** Generated ids, EOS included when the response stopped on it. */
  tokenIds: number[];
  /** log π(token | context) at temperature 1 for each generated token. */
  stepLogprobs: number[];
  /** Σ stepLogprobs: the response's log-prob under the policy. */
  logprob: number;
  /** Whether the response ended with EOS (false: cut at maxNewTokens). */
  finished: boolean;
}

/** Sampling options with their defaults filled in. */
export type CheckedSampleOptions = Required<Omit<SampleOptions, "eosId" | "rows">> & { eosId?: number; rows?: readonly RowSeed[] };

/** Checks options once, naming the option at fault (shared by every sampler: tfjs here, onnxruntime in models/onnx). */
export function checkSampleOptions(o: SampleOptions): CheckedSampleOptions {
  const opts = { temperature: 1, topP: 1, topK: 0, maxNewTokens: 64, seed: 0, padId: 0, streamOffset: 0, ...o };
  if (!(opts.temperature >= 0) || !Number.isFinite(opts.temperature)) throw new TypeError(`temperature must be a finite number ≥ 0, got ${opts.temperature}`);
  if (!(opts.topP > 0 && opts.topP <= 1)) throw new TypeError(`topP must be in (0, 1], got ${opts.topP}`);
  if (!Number.isInteger(opts.topK) || opts.topK < 0) throw new TypeError(`topK must be an integer ≥ 0, got ${opts.topK}`);
  if (!Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 1) throw new TypeError(`maxNewTokens must be an integer ≥ 1, got ${opts.maxNewTokens}`);
  if (!Number.isFinite(opts.seed)) throw new TypeError(`seed must be a finite number, got ${opts.seed}`);
  if (opts.rows !== undefined) {
    if (!Array.isArray(opts.rows)) throw new TypeError(`rows must be an array of { seed, stream }, got ${typeof opts.rows}`);
    opts.rows.forEach((r, b) => {
      if (!Number.isFinite(r?.seed)) throw new TypeError(`rows[${b}].seed must be a finite number, got ${r?.seed}`);
      if (!Number.isInteger(r.stream) || r.stream < 0) throw new TypeError(`rows[${b}].stream must be an integer ≥ 0, got ${r.stream}`);
    });
  }
  return opts;
}

/**
 * The per-row generators of a run of `count` rows: `rows[b]` when given (one entry per row, else TypeError), else
 * (seed, streamOffset + b). Shared by every sampler.
 */
export function rowRngs(o: CheckedSampleOptions, count: number): Rng[] {
  const rows = o.rows;
  if (rows === undefined) return Array.from({ length: count }, (_, b) => createRng(o.seed, o.streamOffset + b));
  if (rows.length !== count) throw new TypeError(`rows must have one entry per prompt (${count}), got ${rows.length}`);
  return rows.map((r) => createRng(r.seed, r.stream));
}

/** log-softmax value of `index` in `row` (at temperature 1), accumulated in float64. */
export function logProbOf(row: Float32Array, index: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  return row[index] - max - Math.log(sum);
}

/**
 * Draws the next token of one row from its logits `row` and records it in `result`: the token, its log-prob at
 * temperature 1 (appended to stepLogprobs and added to logprob), and `finished` when it is `o.eosId`. Returns the
 * token. The per-token step of every sampler (tfjs here, onnxruntime in models/onnx).
 */
export function takeToken(result: SampleResult, row: Float32Array, o: CheckedSampleOptions, rng: Rng): number {
  const token = drawToken(row, o.temperature, o.topK, o.topP, rng);
  const lp = logProbOf(row, token);
  result.tokenIds.push(token);
  result.stepLogprobs.push(lp);
  result.logprob += lp;
  if (o.eosId !== undefined && token === o.eosId) result.finished = true;
  return token;
}

/** Draws one token from `row` under temperature / top-k / top-p with `rng`. */
export function drawToken(row: Float32Array, temperature: number, topK: number, topP: number, rng: Rng): number {
  const V = row.length;
  if (temperature === 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if (row[i] > row[best]) best = i;
    return best;
  }
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < V; i++) if (row[i] > max) max = row[i];
  const probs = new Float64Array(V);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += probs[i] = Math.exp((row[i] - max) / temperature);
  let candidates: number[];
  if (topK > 0 || topP < 1) {
    // Descending by probability; ties broken by id so that the order is deterministic.
    const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
    candidates = topK > 0 ? order.slice(0, Math.min(topK, V)) : order;
    if (topP < 1) {
      const total = candidates.reduce((s, i) => s + probs[i], 0);
      let cum = 0;
      let keep = 0;
      while (keep < candidates.length) {
        cum += probs[candidates[keep]] / total;
        keep++;
        if (cum >= topP) break;
      }
      candidates = candidates.slice(0, keep);
    }
    sum = candidates.reduce((s, i) => s + probs[i], 0);
  } else {
    candidates = [];
  }
  const u = rng.next() * sum;
  let acc = 0;
  if (candidates.length > 0) {
    for (const i of candidates) {
      acc += probs[i];
      if (u < acc) return i;
    }
    return candidates[candidates.length - 1];
  }
  for (let i = 0; i < V; i++) {
    acc += probs[i];
    if (u < acc) return i;
  }
  return V - 1;
}

/**
 * A prompt batch left-padded to length L: row b is [pad × (L − len_b), prompt_b], positions count from the first
 * real token, and the mask is 1 on real tokens. Shared by the tfjs and onnxruntime samplers so their inputs agree.
 */
export function leftPadPrompts(prompts: readonly (readonly number[])[], L: number, padId: number): { ids: Int32Array; positions: Int32Array; masks: number[][] } {
  const ids = new Int32Array(prompts.length * L).fill(padId);
  const positions = new Int32Array(prompts.length * L);
  const masks = prompts.map((p, b) => {
    const off = L - p.length;
    const m = new Array<number>(L).fill(0);
    for (let t = 0; t < p.length; t++) {
      ids[b * L + off + t] = p[t];
      m[off + t] = 1;
      positions[b * L + off + t] = t;
    }
    return m;
  });
  return { ids, positions, masks };
}

/**
 * Samples one response per prompt (ids; repeat a prompt K times for K samples). Synchronous; tensors are freed.
 * Throws RangeError when a prompt is empty or prompt + maxNewTokens exceeds the model's context.
 */
export function sampleIds(model: CausalLM, prompts: number[][], options: SampleOptions = {}): SampleResult[] {
  const o = checkSampleOptions(options);
  const B = prompts.length;
  if (B === 0) return [];
  const L = Math.max(...prompts.map((p) => p.length));
  if (prompts.some((p) => p.length === 0)) throw new RangeError("sampleIds: every prompt needs at least one token");
  const ctx = contextLength(model.config);
  const maxNew = Math.min(o.maxNewTokens, ctx - L);
  if (maxNew < 1) throw new RangeError(`sampleIds: a prompt of ${L} tokens leaves no room in the context of ${ctx}`);

  const { ids, positions: pos, masks: mask } = leftPadPrompts(prompts, L, o.padId);
  const rngs = rowRngs(o, B);
  const results: SampleResult[] = prompts.map(() => ({ tokenIds: [], stepLogprobs: [], logprob: 0, finished: false }));
  const lengths = prompts.map((p) => p.length);

  let cache: KVCache | undefined;
  let logits: tf.Tensor3D;
  {
    const idsT = tf.tensor2d(ids, [B, L], "int32");
    const posT = tf.tensor2d(pos, [B, L], "int32");
    const maskT = tf.tensor2d(mask, [B, L], "float32");
    const out = model.forward(idsT, { positions: posT, attentionMask: maskT, useCache: true, lastOnly: true });
    tf.dispose([idsT, posT, maskT]);
    logits = out.logits;
    cache = out.cache;
  }
  try {
    for (let step = 0; step < maxNew; step++) {
      const V = logits.shape[2];
      const data = logits.dataSync() as Float32Array; // (B, 1, V)
      logits.dispose();
      const next = new Int32Array(B);
      for (let b = 0; b < B; b++) {
        const r = results[b];
        if (r.finished) {
          next[b] = o.padId;
          continue;
        }
        next[b] = takeToken(r, data.subarray(b * V, (b + 1) * V), o, rngs[b]);
      }
      if (results.every((r) => r.finished) || step === maxNew - 1) break;
      for (const m of mask) m.push(1);
      const idsT = tf.tensor2d(next, [B, 1], "int32");
      const posT = tf.tensor2d(
        lengths.map((len) => [len + step]),
        [B, 1],
        "int32",
      );
      const S = mask[0].length;
      const maskT = tf.tensor2d(mask, [B, S], "float32");
      const out = model.forward(idsT, { positions: posT, attentionMask: maskT, cache, useCache: true, lastOnly: true });
      tf.dispose([idsT, posT, maskT]);
      disposeCache(cache);
      cache = out.cache;
      logits = out.logits;
    }
  } finally {
    if (!logits.isDisposed) logits.dispose();
    disposeCache(cache);
  }
  return results;
}
