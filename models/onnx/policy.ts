/**
 * The onnxruntime inference engine of a policy: batched seeded sampling with the KV cache and batched scoring, on
 * ONNX graphs built from the current weights (graph.ts), with a fast weight refresh.
 *
 * Sampling follows models/sample.ts step for step — the same left padding, positions, masks, per-row generators
 * ((seed, streamOffset + row), or `rows[row]`) and `drawToken` — so a seed gives the same tokens on both engines (up to the float
 * rounding of the two runtimes, ~1e-6 on the logits). Rows that finish (EOS) leave the batch, so long responses do
 * not pay for short ones; the other rows' draws are unaffected (each row has its own generator). Scoring sorts the
 * pairs by length before batching (less padding) and returns the scores in the order given.
 *
 * Example:
 * ```ts
 * const policy = await createOrtPolicy("assets/policy", { intraOpThreads: 2 });
 * const [r] = await policy.sample([[0, 5, 9]], { temperature: 0.7, maxNewTokens: 32, seed: 1, eosId: 1 });
 * const [s] = await policy.score([{ prompt: [0, 5, 9], response: r.tokenIds }]); // s.logprob ≈ r.logprob
 * await policy.refresh(newWeights); // the next calls use them
 * await policy.dispose();
 * ```
 */
import type * as ort from "onnxruntime-node";
import { Tensor } from "onnxruntime-node";
import type { ModelProto } from "onnx-buf";
import { padPairs, type TokenPair } from "../batch.js";
import { contextLength, type ModelConfig } from "../config.js";
import { checkSampleOptions, leftPadPrompts, rowRngs, type SampleOptions, type SampleResult, takeToken } from "../sample.js";
import type { Score } from "../score.js";
import type { PolicyTokenizer } from "../tokenizer.js";
import type { PolicyGraphKind } from "./blocks.js";
import { paramShapes } from "../io.js";
import { cacheShape, externalPolicyBytes, policyStructure } from "./graph.js";
import { createSession, type OrtSessionOptions, sessionOptions } from "./session.js";
import { type OpenedSource, openSource, type PolicySource } from "./source.js";
import { checkpointExternalWeights, type ExternalWeights, type OnnxWeightDtype, writeExternalWeights } from "./weights-file.js";
import { Code, RpcError } from "../../lib/errors.js";

/** The operations a session set is built for eagerly (the other is built on first use). */
export type PolicyOperation = "sample" | "score";

export interface OrtPolicyOptions extends OrtSessionOptions {
  /**
   * Sessions built at creation and at every refresh; the others are built on first use. A generator wants
   * ["sample"], a reference scorer ["score"]. @default ["sample"]
   */
  prepare?: readonly PolicyOperation[];
  /**
   * Storage of the weight matrices the sessions run on: "float32", or "float16" (half the memory and bytes moved
   * per decode step; products in float16, see docs/onnx.md for the log-prob difference it causes). @default "float32"
   */
  dtype?: OnnxWeightDtype;
  /**
   * Build the model directory's tokenizer (`policy.tokenizer`). Off where the caller has its own (the generator reads
   * it once for all engines). @default true
   */
  readTokenizer?: boolean;
  /** Folder for weights files written for the sessions (converted or in-memory weights); "" or unset: os.tmpdir() (engine.onnx.weightsDir). */
  weightsDir?: string;
}

export interface ScoreOptions {
  /** Rows per onnxruntime run. @default 16 */
  batchSize?: number;
  /** Id written into padding positions (masked; its value does not matter). @default 0 */
  padId?: number;
}

/** How long a refresh took, in ms. */
export interface RefreshTiming {
  /** Reading the weights and writing the ONNX graphs' bytes. */
  graphMs: number;
  /** onnxruntime session creation (parsing, optimisation, weight prepacking). */
  sessionMs: number;
  /** Whole refresh, from the call to the swap. */
  totalMs: number;
}

/** Graph structures by config and kind: they do not change when only the weights do. */
class StructureCache {
  private readonly entries = new Map<string, ModelProto>();
  get(config: ModelConfig, kind: PolicyGraphKind, weightDtype: OnnxWeightDtype): ModelProto {
    const key = `${kind} ${weightDtype} ${JSON.stringify(config)}`;
    let structure = this.entries.get(key);
    if (!structure) {
      if (this.entries.size >= 8) this.entries.clear(); // configs rarely change; never grow without bound
      structure = policyStructure(config, { kind, weightDtype });
      this.entries.set(key, structure);
    }
    return structure;
  }
}

/**
 * The weights a session set runs on, as external data: the checkpoint's own F32 files when the source is such a
 * directory and the sessions want float32, else a weights file written now (read tensor by tensor from the source).
 */
function externalWeightsOf(opened: OpenedSource, options: OrtPolicyOptions): ExternalWeights {
  const dtype = options.dtype ?? "float32";
  const direct = opened.files ? checkpointExternalWeights(opened.config, opened.files, dtype) : undefined;
  return direct ?? writeExternalWeights(opened.config, opened.weights, dtype, options.weightsDir);
}

/**
 * One version of the weights with its sessions; released when retired and no call holds it. All its sessions map
 * the same weights (external data), so a second session costs its own working memory, not a second copy of the
 * weights — except what onnxruntime prepacks (see `session`).
 */
class SessionSet {
  private readonly sessions = new Map<PolicyGraphKind, Promise<ort.InferenceSession>>();
  private holders = 0;
  private retired = false;

  constructor(
    readonly config: ModelConfig,
    private readonly weights: ExternalWeights,
    private readonly options: OrtPolicyOptions,
    private readonly structures: StructureCache,
  ) {}

  /**
   * The session of `kind`, built on first use; `timing` collects where the time went. The sampling session lets
   * onnxruntime prepack its weight matrices unless `prepackWeights` is false (a private copy in the layout its GEMM
   * wants: decode steps multiply a few rows by every weight, and packing per call costs about as much as the
   * product); the scoring session never does (its products have B·T rows, so packing per call is cheap, and it keeps
   * no copy of its own: it reads the mapped weights).
   */
  session(kind: PolicyGraphKind, timing?: { graphMs: number; sessionMs: number }): Promise<ort.InferenceSession> {
    let s = this.sessions.get(kind);
    if (!s) {
      const t0 = performance.now();
      const weightDtype = this.options.dtype ?? "float32";
      const bytes = externalPolicyBytes(this.config, this.weights, { kind, structure: this.structures.get(this.config, kind, weightDtype) });
      const t1 = performance.now();
      const prepackWeights = kind !== "score" && this.options.prepackWeights !== false;
      s = createSession(bytes, { ...this.options, externalDataFolder: this.weights.folder, prepackWeights }).then((session) => {
        if (timing) {
          timing.graphMs += t1 - t0;
          timing.sessionMs += performance.now() - t1;
        }
        return session;
      });
      this.sessions.set(kind, s);
      s.catch(() => this.sessions.delete(kind)); // a failed build is retried by the next call
    }
    return s;
  }

  acquire(): void {
    this.holders++;
  }

  async release(): Promise<void> {
    this.holders--;
    if (this.retired && this.holders === 0) await this.close();
  }

  async retire(): Promise<void> {
    this.retired = true;
    if (this.holders === 0) await this.close();
  }

  private async close(): Promise<void> {
    const sessions = [...this.sessions.values()];
    this.sessions.clear();
    for (const s of await Promise.allSettled(sessions)) if (s.status === "fulfilled") await s.value.release();
    this.weights.release();
  }
}

function checkIds(ids: readonly number[], vocab: number, what: string): void {
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new RangeError(`${what}: token id ${id} is outside the vocabulary [0, ${vocab})`);
  }
}

function int64(values: ArrayLike<number>, dims: number[]): ort.Tensor {
  const data = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) data[i] = BigInt(values[i]);
  return new Tensor("int64", data, dims);
}

/** Rows `keep` of a [B, ...] cache tensor (row blocks are contiguous). */
function keepRows(t: ort.Tensor, keep: readonly number[]): ort.Tensor {
  const [, ...rest] = t.dims;
  const block = rest.reduce((a, d) => a * d, 1);
  const src = t.data as Float32Array;
  const out = new Float32Array(keep.length * block);
  for (const [j, row] of keep.entries()) out.set(src.subarray(row * block, (row + 1) * block), j * block);
  return new Tensor("float32", out, [keep.length, ...rest]);
}

/** A policy served by onnxruntime. Create with `createOrtPolicy`. */
export class OrtPolicy {
  /** Engine name, as reported by `sppo sample --json` and the generator. */
  readonly name = "onnxruntime" as const;
  private current: SessionSet;
  private disposed = false;

  private constructor(
    set: SessionSet,
    /** The tokenizer of a model directory or loaded model source (absent for raw weights). */
    readonly tokenizer: PolicyTokenizer | undefined,
    private readonly options: OrtPolicyOptions,
    private readonly structures: StructureCache,
  ) {
    this.current = set;
  }

  /** Builds the policy's sessions (see `createOrtPolicy`). */
  static async create(source: PolicySource, options: OrtPolicyOptions = {}): Promise<OrtPolicy> {
    sessionOptions(options); // checks the options before any work
    checkWeightDtype(options.dtype);
    const structures = new StructureCache();
    const { set, tokenizer } = sessionSetOf(source, options, structures);
    try {
      for (const op of options.prepare ?? ["sample"]) await set.session(op === "sample" ? "step" : "score");
    } catch (err) {
      await set.retire();
      throw err;
    }
    return new OrtPolicy(set, tokenizer, options, structures);
  }

  /** The architecture of the current weights. */
  get config(): ModelConfig {
    return this.current.config;
  }

  /** Number of parameters (a tied head counted once). */
  get parameters(): number {
    return paramShapes(this.current.config).reduce((n, [, shape]) => n + shape.reduce((a, d) => a * d, 1), 0);
  }

  private hold(): SessionSet {
    if (this.disposed) throw new RpcError(Code.INTERNAL, "OrtPolicy: used after dispose()");
    const set = this.current;
    set.acquire();
    return set;
  }

  /**
   * Builds sessions over new weights and swaps them in; calls already running finish on the old weights, later
   * calls use the new ones. The old sessions are released once their last call ends.
   */
  async refresh(source: PolicySource): Promise<RefreshTiming> {
    if (this.disposed) throw new RpcError(Code.INTERNAL, "OrtPolicy: refresh() after dispose()");
    const t0 = performance.now();
    const { set } = sessionSetOf(source, this.options, this.structures, false); // the tokenizer stays the first one's
    const timing = { graphMs: performance.now() - t0, sessionMs: 0 };
    try {
      for (const op of this.options.prepare ?? ["sample"]) await set.session(op === "sample" ? "step" : "score", timing);
    } catch (err) {
      await set.retire();
      throw err;
    }
    const old = this.current;
    this.current = set;
    await old.retire();
    return { ...timing, totalMs: performance.now() - t0 };
  }

  /**
   * Samples one response per prompt (repeat a prompt K times for K samples), exactly as models/sample.ts's
   * `sampleIds` does. Throws RangeError when a prompt is empty, holds an id outside the vocabulary, or leaves no
   * room in the context.
   */
  async sample(prompts: number[][], options: SampleOptions = {}): Promise<SampleResult[]> {
    const o = checkSampleOptions(options);
    const B = prompts.length;
    if (B === 0) return [];
    const set = this.hold();
    try {
      const config = set.config;
      if (prompts.some((p) => p.length === 0)) throw new RangeError("sample: every prompt needs at least one token");
      for (const [b, p] of prompts.entries()) checkIds(p, config.vocab_size, `sample: prompt ${b}`);
      const L = Math.max(...prompts.map((p) => p.length));
      const ctx = contextLength(config);
      const maxNew = Math.min(o.maxNewTokens, ctx - L);
      if (maxNew < 1) throw new RangeError(`sample: a prompt of ${L} tokens leaves no room in the context of ${ctx}`);
      const session = await set.session("step");
      const { layers, kvHeads, headDim } = cacheShape(config);

      const { ids, positions: pos, masks } = leftPadPrompts(prompts, L, o.padId);
      const rngs = rowRngs(o, B);
      const results: SampleResult[] = prompts.map(() => ({ tokenIds: [], stepLogprobs: [], logprob: 0, finished: false }));
      const feeds: Record<string, ort.Tensor> = {
        input_ids: int64(ids, [B, L]),
        attention_mask: int64(masks.flat(), [B, L]),
        position_ids: int64(pos, [B, L]),
      };
      const empty = new Float32Array(0);
      for (let i = 0; i < layers; i++) {
        feeds[`past_key_values.${i}.key`] = new Tensor("float32", empty, [B, kvHeads, 0, headDim]);
        feeds[`past_key_values.${i}.value`] = new Tensor("float32", empty, [B, kvHeads, 0, headDim]);
      }
      let out = await session.run(feeds);
      let active = prompts.map((_, b) => b); // original rows still in the batch, in batch order
      for (let step = 0; step < maxNew; step++) {
        const logits = out.logits.data as Float32Array; // (B_active, V)
        const V = out.logits.dims[1];
        const next: number[] = [];
        const keep: number[] = [];
        active.forEach((b, j) => {
          const r = results[b];
          const token = takeToken(r, logits.subarray(j * V, (j + 1) * V), o, rngs[b]);
          if (!r.finished) {
            keep.push(j);
            next.push(token);
          }
        });
        if (keep.length === 0 || step === maxNew - 1) break;
        const compact = keep.length < active.length;
        active = keep.map((j) => active[j]);
        const S = L + step + 1; // keys after this step: prompt block + generated tokens
        const stepMask: number[] = [];
        for (const b of active) {
          masks[b].push(1);
          for (const m of masks[b]) stepMask.push(m);
        }
        const stepFeeds: Record<string, ort.Tensor> = {
          input_ids: int64(next, [active.length, 1]),
          attention_mask: int64(stepMask, [active.length, S]),
          position_ids: int64(
            active.map((b) => prompts[b].length + step),
            [active.length, 1],
          ),
        };
        for (let i = 0; i < layers; i++) {
          const k = out[`present.${i}.key`];
          const v = out[`present.${i}.value`];
          stepFeeds[`past_key_values.${i}.key`] = compact ? keepRows(k, keep) : k;
          stepFeeds[`past_key_values.${i}.value`] = compact ? keepRows(v, keep) : v;
        }
        out = await session.run(stepFeeds);
      }
      return results;
    } finally {
      await set.release();
    }
  }

  /**
   * Σ log π(response | prompt) of each pair (prompt tokens masked, temperature 1), as models/score.ts's
   * `scorePairs`, in the order given. Throws RangeError for an empty prompt, an id outside the vocabulary or a pair
   * longer than the context.
   */
  async score(pairs: TokenPair[], options: ScoreOptions = {}): Promise<Score[]> {
    const batchSize = options.batchSize ?? 16;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new TypeError(`batchSize must be an integer ≥ 1, got ${batchSize}`);
    const padId = options.padId ?? 0;
    if (pairs.length === 0) return [];
    const set = this.hold();
    try {
      const config = set.config;
      const ctx = contextLength(config);
      pairs.forEach((p, i) => {
        if (p.prompt.length === 0) throw new RangeError(`score: pair ${i} has an empty prompt (prepend BOS)`);
        if (p.prompt.length + p.response.length > ctx) throw new RangeError(`score: pair ${i} has ${p.prompt.length + p.response.length} tokens, more than the context of ${ctx}`);
        checkIds(p.prompt, config.vocab_size, `score: pair ${i} prompt`);
        checkIds(p.response, config.vocab_size, `score: pair ${i} response`);
      });
      const session = await set.session("score");
      const length = (i: number) => pairs[i].prompt.length + pairs[i].response.length;
      const order = pairs.map((_, i) => i).sort((a, b) => length(a) - length(b) || a - b);
      const out = new Array<Score>(pairs.length);
      for (let start = 0; start < order.length; start += batchSize) {
        const rows = order.slice(start, start + batchSize);
        // Right padding as makeBatch pads (models/batch.ts): targets[t] = ids[t + 1], scored where t + 1 is a response token.
        const { B, L, ids, mask, targets, responseMask } = padPairs(
          rows.map((i) => pairs[i]),
          padId,
          "score",
        );
        const result = await session.run({
          input_ids: int64(ids, [B, L]),
          attention_mask: int64(mask, [B, L]),
          targets: int64(targets, [B, L]),
          response_mask: new Tensor("float32", responseMask, [B, L]),
        });
        const logprob = result.logprob.data as Float32Array;
        rows.forEach((i, b) => {
          out[i] = { logprob: logprob[b] + 0, tokens: pairs[i].response.length }; // + 0: an empty response sums to -0 in the graph
        });
      }
      return out;
    } finally {
      await set.release();
    }
  }

  /** Releases the sessions (after the calls in flight end). Idempotent. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.current.retire();
  }
}

function checkWeightDtype(dtype: string | undefined): void {
  if (dtype !== undefined && dtype !== "float32" && dtype !== "float16") throw new TypeError(`dtype must be "float32" or "float16", got ${dtype}`);
}

/** Opens `source`, lays its weights out as external data and wraps them in a session set (no session built yet). */
function sessionSetOf(source: PolicySource, options: OrtPolicyOptions, structures: StructureCache, tokenizer = true): { set: SessionSet; tokenizer?: PolicyTokenizer } {
  const opened = openSource(source, { tokenizer: tokenizer && options.readTokenizer !== false });
  try {
    return { set: new SessionSet(opened.config, externalWeightsOf(opened, options), options, structures), tokenizer: opened.tokenizer };
  } finally {
    opened.close();
  }
}

/**
 * An onnxruntime policy from a model directory (config.json + model.safetensors [+ tokenizer.json], read without
 * tfjs), a loaded tfjs model (its current weights) or raw weights by HF name. Builds the sessions `prepare` names.
 * Throws a RpcError of kind "model-format" for a bad directory and TypeError for bad options or weights.
 */
export function createOrtPolicy(source: PolicySource, options: OrtPolicyOptions = {}): Promise<OrtPolicy> {
  return OrtPolicy.create(source, options);
}
