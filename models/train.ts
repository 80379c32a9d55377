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

abstract class SlotOptimizer implements Optimizer {
  protected step = 0;
  protected slots = new Map<string, Map<string, tf.Variable>>();
  protected abstract readonly kind: "adam" | "rmsprop";
  protected abstract readonly slotNames: string[];
  protected abstract options(): Record<string, number>;
  protected abstract update(p: tf.Variable, g: tf.Tensor, slots: Map<string, tf.Variable>, lr: number): void;

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

  state(): OptimizerState {
    const slots: OptimizerState["slots"] = {};
    for (const [name, s] of this.slots) {
      slots[name] = {};
      for (const [slot, v] of s) slots[name][slot] = { shape: [...v.shape], data: Array.from(v.dataSync()) };
    }
    return { kind: this.kind, step: this.step, options: this.options(), slots };
  }

  protected load(state: OptimizerState): void {
    if (state.kind !== this.kind) throw new TypeError(`optimizer state is for ${state.kind}, not ${this.kind}`);
    this.step = state.step;
    for (const [name, s] of Object.entries(state.slots)) {
      const m = new Map<string, tf.Variable>();
      for (const slot of this.slotNames) {
        const entry = s[slot];
        if (!entry) throw new TypeError(`optimizer state: parameter ${name} lacks slot ${slot}`);
        m.set(slot, tf.tidy(() => tf.variable(tf.tensor(entry.data, entry.shape, "float32"), false)));
      }
      this.slots.set(name, m);
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
export class Adam extends SlotOptimizer {
  protected readonly kind = "adam" as const;
  protected readonly slotNames = ["m", "v"];
  private readonly o: Required<AdamOptions>;
  constructor(options: AdamOptions = {}) {
    super();
    this.o = { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0, ...options };
  }
  static fromState(state: OptimizerState): Adam {
    const a = new Adam(state.options as AdamOptions);
    a.load(state);
    return a;
  }
  protected options(): Record<string, number> {
    return { ...this.o };
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
export class RMSprop extends SlotOptimizer {
  protected readonly kind = "rmsprop" as const;
  protected readonly slotNames = ["v"];
  private readonly o: Required<RMSpropOptions>;
  constructor(options: RMSpropOptions = {}) {
    super();
    this.o = { alpha: 0.99, epsilon: 1e-8, ...options };
  }
  static fromState(state: OptimizerState): RMSprop {
    const r = new RMSprop(state.options as RMSpropOptions);
    r.load(state);
    return r;
  }
  protected options(): Record<string, number> {
    return { ...this.o };
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
