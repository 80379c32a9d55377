/**
 * One micro-batch's loss, log-probs and gradients on onnxruntime (the fast training path): the training graph of
 * graph.ts for the model's config and loss, one session per loss, weights fed as inputs from the caller's
 * Float32Arrays (no copy, no session rebuild after an update). Deterministic: the same weights and batch give
 * bit-identical results (onnxruntime's CPU kernels split work the same way on every run of a session; the
 * embedding scatter-add runs in row order here).
 *
 *   const step = await OrtGradients.create(config, { intraOpThreads: 2 });
 *   const { loss, logprobs, grads } = await step.run(weights, pairs, { kind: "sppo", ref, winRate, eta, scale: 1 });
 *   step.dispose();
 */
import * as ort from "onnxruntime-node";
import { serializeModel } from "../../lib/onnx/index.js";
import { padPairs, type TokenPair } from "../batch.js";
import type { ModelConfig } from "../config.js";
import { paramShapes } from "../io.js";
import { type OrtSessionOptions, sessionOptions } from "../onnx/session.js";
import { gradOutput } from "./blocks.js";
import { EMBEDDING_ROWS_GRAD, embeddingParam, trainGraph } from "./graph.js";
import type { TrainLoss } from "./loss.js";

/** The loss of a micro-batch and its inputs (see loss.ts). Arrays are per row, in the batch's order. */
export type LossInputs =
  | { kind: "weighted"; weights: ArrayLike<number> }
  | { kind: Exclude<TrainLoss, "weighted">; ref: ArrayLike<number>; winRate: ArrayLike<number>; eta: number; scale: number };

/** Parameter arrays by HF name (row-major float32, shapes as `paramShapes`). */
export type NamedArrays = Map<string, Float32Array>;

export interface GradientsResult {
  /** The micro-batch's loss (already multiplied by `scale`). */
  loss: number;
  /** Summed response log-probs per row. */
  logprobs: Float32Array;
  /** ∂loss/∂θ for every parameter, by HF name (fresh arrays the caller owns). */
  grads: NamedArrays;
}

export class OrtGradients {
  private readonly sessions = new Map<TrainLoss, Promise<ort.InferenceSession>>();
  private readonly shapes: [string, number[]][];

  private constructor(
    readonly config: ModelConfig,
    private readonly options: OrtSessionOptions,
  ) {
    this.shapes = paramShapes(config);
  }

  /** A gradient engine for `config`; sessions are built on first use of each loss. */
  static async create(config: ModelConfig, options: OrtSessionOptions = {}): Promise<OrtGradients> {
    return new OrtGradients(config, options);
  }

  private session(loss: TrainLoss): Promise<ort.InferenceSession> {
    let s = this.sessions.get(loss);
    if (!s) {
      // No memory pattern: with it, onnxruntime allocates each run's activations as one fresh block whose pages fault
      // in again on every run (measured on the reference model: 40% more CPU time per run, a third of it in the
      // kernel); without, its arena hands the same chunks back run after run.
      s = ort.InferenceSession.create(serializeModel(trainGraph(this.config, loss)), { ...sessionOptions(this.options), enableMemPattern: false });
      this.sessions.set(loss, s);
    }
    return s;
  }

  /** Builds the session of `loss` now (its first run otherwise pays for it). */
  async prepare(loss: TrainLoss): Promise<void> {
    await this.session(loss);
  }

  /** Loss, log-probs and gradients of `pairs` (right-padded into one batch) under `weights`. */
  async run(weights: ReadonlyMap<string, Float32Array>, pairs: readonly TokenPair[], loss: LossInputs, padId = 0): Promise<GradientsResult> {
    const { B, L, ids, mask, targets, responseMask } = padPairs(pairs, padId, "OrtGradients.run");
    if (loss.kind !== "sppo" && loss.kind !== "weighted" && B % 2 !== 0) throw new RangeError(`${loss.kind} loss needs chosen/rejected pairs: got ${B} responses`);
    const i64 = (a: ArrayLike<number>) => new ort.Tensor("int64", BigInt64Array.from(a, (v) => BigInt(v)), [B, L]);
    const feeds: Record<string, ort.Tensor> = {
      input_ids: i64(ids),
      attention_mask: i64(mask),
      targets: i64(targets),
      response_mask: new ort.Tensor("float32", responseMask, [B, L]),
    };
    for (const [name, dims] of this.shapes) {
      const data = weights.get(name);
      if (!data) throw new TypeError(`OrtGradients.run: weight ${name} is missing`);
      feeds[name] = new ort.Tensor("float32", data, dims);
    }
    const f32 = (values: ArrayLike<number>, what: string) => {
      if (values.length !== B) throw new RangeError(`OrtGradients.run: ${what} has ${values.length} entries for ${B} rows`);
      return new ort.Tensor("float32", Float32Array.from(values), [B]);
    };
    if (loss.kind === "weighted") feeds.weights = f32(loss.weights, "weights");
    else {
      feeds.ref_logprob = f32(loss.ref, "ref");
      if (loss.kind === "sppo") feeds.win_rate = f32(loss.winRate, "winRate");
      feeds.eta = new ort.Tensor("float32", Float32Array.of(loss.eta), []);
      feeds.loss_scale = new ort.Tensor("float32", Float32Array.of(loss.scale), []);
    }
    const out = await (await this.session(loss.kind)).run(feeds);
    const grads: NamedArrays = new Map();
    for (const [name] of this.shapes) {
      const g = out[gradOutput(name)];
      if (g) grads.set(name, g.data as Float32Array);
    }
    // The token embedding: the head's part (tied) or zeros, plus each looked-up row's gradient, in row order.
    const embed = embeddingParam(this.config);
    const width = this.shapes.find(([n]) => n === embed)![1][1];
    let dEmbed = grads.get(embed);
    if (!dEmbed) {
      dEmbed = new Float32Array(this.config.vocab_size * width);
      grads.set(embed, dEmbed);
    }
    const rows = out[EMBEDDING_ROWS_GRAD].data as Float32Array;
    for (let n = 0; n < B * L; n++) {
      const base = ids[n] * width;
      const from = n * width;
      for (let j = 0; j < width; j++) dEmbed[base + j] += rows[from + j];
    }
    return { loss: (out.loss.data as Float32Array)[0], logprobs: out.logprob.data as Float32Array, grads };
  }

  async dispose(): Promise<void> {
    const sessions = [...this.sessions.values()];
    this.sessions.clear();
    for (const s of sessions) await (await s).release();
  }
}
