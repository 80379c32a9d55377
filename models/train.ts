/**
 * Training primitives: gradients by HF parameter name, Adam and RMSprop (PyTorch semantics) whose state round-trips
 * through plain arrays for checkpoints, global-norm gradient clipping, and the warm-up-then-linear-decay schedule.
 *
 * A step, as the optimizer service runs it:
 *   const { value, grads } = valueAndGrads(model, () => myLoss(sequenceLogProbs(model, batch)));
 *   const { grads: clipped, norm } = clipGradNorm(grads, 1.0);
 *   optimizer.apply(model.params, clipped, schedule(step));
 *   tf.dispose([value, grads, clipped]);
 */
import * as tf from "@tensorflow/tfjs";
import type { CausalLM } from "./model.js";
import { Code, RpcError } from "../lib/errors.js";

/** Gradients keyed by HF parameter name. */
export type NamedGrads = Record<string, tf.Tensor>;

/**
 * Evaluates the scalar `loss` and its gradient with respect to every model parameter (by HF name). Parameters the
 * loss does not touch get no entry. The caller disposes `value` and `grads`.
 */
export function valueAndGrads(model: CausalLM, loss: () => tf.Scalar): { value: tf.Scalar; grads: NamedGrads } {
  const names = new Map<string, string>();
  for (const [name, v] of model.params) names.set(v.name, name);
  const { value, grads } = tf.variableGrads(loss, [...model.params.values()]);
  const out: NamedGrads = {};
  for (const [varName, g] of Object.entries(grads)) out[names.get(varName) ?? varName] = g;
  return { value, grads: out };
}

/**
 * Scales all gradients by min(1, maxNorm / (‖g‖₂ + 1e-6)) where ‖g‖₂ is the global norm over all of them (as
 * `torch.nn.utils.clip_grad_norm_`). Returns new tensors (the caller disposes both sets) and the norm before clipping.
 */
export function clipGradNorm(grads: NamedGrads, maxNorm: number): { grads: NamedGrads; norm: number } {
  if (!(maxNorm > 0)) throw new TypeError(`maxNorm must be > 0, got ${maxNorm}`);
  const norm = tf.tidy(() => tf.addN(Object.values(grads).map((g) => g.square().sum())).sqrt().dataSync()[0]);
  const scale = Math.min(1, maxNorm / (norm + 1e-6));
  const out: NamedGrads = {};
  for (const [name, g] of Object.entries(grads)) out[name] = tf.tidy(() => (scale < 1 ? g.mul(scale) : g.clone()));
  return { grads: out, norm };
}

/** Linear warm-up from 0 to `peakLr` over `warmupSteps`, then linear decay to 0 at `totalSteps` (HF's schedule). */
export function warmupLinearSchedule(peakLr: number, warmupSteps: number, totalSteps: number): (step: number) => number {
  if (!(totalSteps > 0) || warmupSteps < 0 || warmupSteps > totalSteps) throw new RangeError(`schedule needs 0 ≤ warmupSteps (${warmupSteps}) ≤ totalSteps (${totalSteps}), totalSteps > 0`);
  return (step) => {
    if (step < warmupSteps) return (peakLr * step) / Math.max(1, warmupSteps);
    return (peakLr * Math.max(0, totalSteps - step)) / Math.max(1, totalSteps - warmupSteps);
  };
}

/** An optimizer's state as plain data (JSON-safe), for checkpoints with exact resume. */
export interface OptimizerState {
  kind: "adam" | "rmsprop";
  /** Steps taken. */
  step: number;
  /** Hyper-parameters as constructed. */
  options: Record<string, number>;
  /** Per-parameter slots by HF name, each slot a flat array in row-major order: Adam {m, v}, RMSprop {v}. */
  slots: Record<string, Record<string, { shape: number[]; data: number[] }>>;
}

/** Common shape of the optimizers: `apply` updates the variables in place. */
export interface Optimizer {
  apply(params: ReadonlyMap<string, tf.Variable>, grads: NamedGrads, lr: number): void;
  /** A snapshot of the state as plain arrays. */
  state(): OptimizerState;
  dispose(): void;
}

/**
 * The optimizer kinds: their hyper-parameters with torch's defaults and their per-parameter slots — one table for
 * the tfjs optimizers here and the array ones of models/onnx-train/optimizer.ts, so a checkpoint of either resumes
 * on either.
 */
export const OPTIMIZER_KINDS = {
  adam: { defaults: { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0 }, slots: ["m", "v"] },
  rmsprop: { defaults: { alpha: 0.99, epsilon: 1e-8 }, slots: ["v"] },
} as const;

export type OptimizerKind = keyof typeof OPTIMIZER_KINDS;

/** The hyper-parameters of an optimizer of kind K, every one set. */
export type OptimizerHyper<K extends OptimizerKind> = { -readonly [N in keyof (typeof OPTIMIZER_KINDS)[K]["defaults"]]: number };

/** The hyper-parameters of an optimizer of `kind`: the defaults, overridden by `options`. */
export function optimizerOptions<K extends OptimizerKind>(kind: K, options: Partial<OptimizerHyper<K>>): OptimizerHyper<K> {
  return { ...OPTIMIZER_KINDS[kind].defaults, ...options } as OptimizerHyper<K>;
}

/** A saved slot: its shape and values in row-major order. */
type SlotData = { shape: number[]; data: number[] };

/**
 * What every optimizer with per-parameter slots shares, whatever holds a slot (a tf.Variable here, a Float32Array in
 * models/onnx-train/optimizer.ts): its kind, hyper-parameters and slot names, the step count, and the state it saves
 * and is restored from.
 */
export abstract class SlotOptimizerBase<K extends OptimizerKind, Slot> implements Optimizer {
  protected step = 0;
  protected readonly slots = new Map<string, Map<string, Slot>>();
  protected readonly slotNames: readonly string[];
  /** The hyper-parameters (defaults filled in). */
  protected readonly o: OptimizerHyper<K>;
  protected constructor(
    protected readonly kind: K,
    options: Partial<OptimizerHyper<K>>,
  ) {
    this.slotNames = OPTIMIZER_KINDS[kind].slots;
    this.o = optimizerOptions(kind, options);
  }
  abstract apply(params: ReadonlyMap<string, tf.Variable>, grads: NamedGrads, lr: number): void;
  abstract dispose(): void;
  /** A slot as saved data. */
  protected abstract saveSlot(slot: Slot): SlotData;
  /** A slot from saved data. */
  protected abstract loadSlot(data: SlotData): Slot;

  /** An optimizer of this class continuing from a saved state (written by either training path). */
  static fromState<T extends SlotOptimizerBase<OptimizerKind, unknown>>(this: new (options: Record<string, number>) => T, state: OptimizerState): T {
    const optimizer = new this(state.options);
    optimizer.load(state);
    return optimizer;
  }

  state(): OptimizerState {
    const slots: OptimizerState["slots"] = {};
    for (const [name, s] of this.slots) {
      slots[name] = {};
      for (const [slot, v] of s) slots[name][slot] = this.saveSlot(v);
    }
    return { kind: this.kind, step: this.step, options: { ...this.o }, slots };
  }

  protected load(state: OptimizerState): void {
    if (state.kind !== this.kind) throw new TypeError(`optimizer state is for ${state.kind}, not ${this.kind}`);
    this.step = state.step;
    for (const [name, s] of Object.entries(state.slots)) {
      const m = new Map<string, Slot>();
      for (const slot of this.slotNames) {
        const entry = s[slot];
        if (!entry) throw new TypeError(`optimizer state: parameter ${name} lacks slot ${slot}`);
        m.set(slot, this.loadSlot(entry));
      }
      this.slots.set(name, m);
    }
  }
}

abstract class SlotOptimizer<K extends OptimizerKind> extends SlotOptimizerBase<K, tf.Variable> {
  protected abstract update(p: tf.Variable, g: tf.Tensor, slots: Map<string, tf.Variable>, lr: number): void;

  protected saveSlot(v: tf.Variable): SlotData {
    return { shape: [...v.shape], data: Array.from(v.dataSync()) };
  }

  protected loadSlot(entry: SlotData): tf.Variable {
    return tf.tidy(() => tf.variable(tf.tensor(entry.data, entry.shape, "float32"), false));
  }

  protected slotsFor(name: string, p: tf.Variable): Map<string, tf.Variable> {
    let s = this.slots.get(name);
    if (!s) {
      s = new Map(this.slotNames.map((n) => [n, tf.tidy(() => tf.variable(tf.zerosLike(p), false))]));
      this.slots.set(name, s);
    }
    return s;
  }

  apply(params: ReadonlyMap<string, tf.Variable>, grads: NamedGrads, lr: number): void {
    this.step++;
    for (const [name, g] of Object.entries(grads)) {
      const p = params.get(name);
      if (!p) throw new RpcError(Code.INTERNAL, `optimizer: gradient for unknown parameter ${name}`);
      const slots = this.slotsFor(name, p);
      tf.tidy(() => this.update(p, g, slots, lr));
    }
  }

  dispose(): void {
    for (const s of this.slots.values()) for (const v of s.values()) v.dispose();
    this.slots.clear();
  }
}

export interface AdamOptions {
  /** @default 0.9 */
  beta1?: number;
  /** @default 0.999 */
  beta2?: number;
  /** @default 1e-8 */
  epsilon?: number;
  /** Decoupled weight decay (AdamW); 0 is plain Adam. @default 0 */
  weightDecay?: number;
}

/** Adam/AdamW with bias correction, as torch.optim.Adam(W). The learning rate is passed per step. */
export class Adam extends SlotOptimizer<"adam"> {
  constructor(options: AdamOptions = {}) {
    super("adam", options);
  }
  protected update(p: tf.Variable, g: tf.Tensor, slots: Map<string, tf.Variable>, lr: number): void {
    const { beta1, beta2, epsilon, weightDecay } = this.o;
    const m = slots.get("m")!;
    const v = slots.get("v")!;
    m.assign(m.mul(beta1).add(g.mul(1 - beta1)));
    v.assign(v.mul(beta2).add(g.square().mul(1 - beta2)));
    const mHat = m.div(1 - beta1 ** this.step);
    const vHat = v.div(1 - beta2 ** this.step);
    let next = p.sub(mHat.div(vHat.sqrt().add(epsilon)).mul(lr));
    if (weightDecay > 0) next = next.sub(p.mul(lr * weightDecay));
    p.assign(next);
  }
}

export interface RMSpropOptions {
  /** Smoothing constant of the squared-gradient average. @default 0.99 (torch) */
  alpha?: number;
  /** @default 1e-8 */
  epsilon?: number;
}

/** RMSprop as torch.optim.RMSprop (no momentum, not centered): v = αv + (1-α)g², p -= lr·g/(√v + ε). */
export class RMSprop extends SlotOptimizer<"rmsprop"> {
  constructor(options: RMSpropOptions = {}) {
    super("rmsprop", options);
  }
  protected update(p: tf.Variable, g: tf.Tensor, slots: Map<string, tf.Variable>, lr: number): void {
    const v = slots.get("v")!;
    v.assign(v.mul(this.o.alpha).add(g.square().mul(1 - this.o.alpha)));
    p.assign(p.sub(g.div(v.sqrt().add(this.o.epsilon)).mul(lr)));
  }
}

/** Rebuilds an optimizer (Adam or RMSprop) from its state. */
export function optimizerFromState(state: OptimizerState): Optimizer {
  return state.kind === "adam" ? Adam.fromState(state) : RMSprop.fromState(state);
}
