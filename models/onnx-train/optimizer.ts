/**
 * The optimizer update of the fast training path, in JS over Float32Arrays: Adam(W) and RMSprop with
 * torch.optim semantics, the same hyper-parameters, defaults and `OptimizerState` as models/train.ts's tfjs
 * optimizers, so a checkpoint written by either path resumes on either. Each element is computed in float64 and
 * stored as float32 (tfjs rounds after every op; the two agree to float rounding). Plain loops are deterministic,
 * and at GPT-2 small's 124 M parameters an RMSprop update takes a fraction of a second, a few % of a step.
 * They also implement models/train.ts's `Optimizer` (updating tf.Variables through the same loops), so a trainer
 * holds one kind of optimizer whatever engine runs its steps.
 *
 *   const opt = new ArrayRMSprop();
 *   opt.applyArrays(weights, grads, lr);      // weights updated in place
 *   const saved = opt.state();                // → checkpoints; arrayOptimizerFromState(saved) resumes
 */
import * as tf from "@tensorflow/tfjs";
import { type AdamOptions, type NamedGrads, type Optimizer, type OptimizerKind, type OptimizerState, type RMSpropOptions, SlotOptimizerBase } from "../train.js";

/** An optimizer whose update runs on plain arrays. */
export interface ArrayOptimizer extends Optimizer {
  /** One update of every parameter that has a gradient (in place); `shapes` are recorded with new slots. */
  applyArrays(params: ReadonlyMap<string, Float32Array>, grads: ReadonlyMap<string, Float32Array>, lr: number, shapes?: ReadonlyMap<string, readonly number[]>): void;
}

/** Whether `optimizer` can update plain arrays. */
export function isArrayOptimizer(optimizer: Optimizer): optimizer is ArrayOptimizer {
  return typeof (optimizer as Partial<ArrayOptimizer>).applyArrays === "function";
}

/** A slot: its shape (as saved) and its values. */
type ArraySlot = { shape: number[]; data: Float32Array };

abstract class SlotArrays<K extends OptimizerKind> extends SlotOptimizerBase<K, ArraySlot> implements ArrayOptimizer {
  protected abstract update(p: Float32Array, g: Float32Array, slots: Float32Array[], lr: number): void;

  protected saveSlot(v: ArraySlot): { shape: number[]; data: number[] } {
    return { shape: [...v.shape], data: Array.from(v.data) };
  }

  protected loadSlot(entry: { shape: number[]; data: number[] }): ArraySlot {
    return { shape: [...entry.shape], data: Float32Array.from(entry.data) };
  }

  applyArrays(params: ReadonlyMap<string, Float32Array>, grads: ReadonlyMap<string, Float32Array>, lr: number, shapes?: ReadonlyMap<string, readonly number[]>): void {
    this.step++;
    for (const [name, g] of grads) {
      const p = params.get(name);
      if (!p) throw new TypeError(`optimizer: gradient for unknown parameter ${name}`);
      if (p.length !== g.length) throw new RangeError(`optimizer: gradient of ${name} has ${g.length} elements, the parameter ${p.length}`);
      this.update(p, g, this.slotsFor(name, p.length, shapes?.get(name)), lr);
    }
  }

  /** The tfjs form: reads each variable and gradient, updates, assigns the result. */
  apply(params: ReadonlyMap<string, tf.Variable>, grads: NamedGrads, lr: number): void {
    this.step++;
    for (const [name, gt] of Object.entries(grads)) {
      const v = params.get(name);
      if (!v) throw new TypeError(`optimizer: gradient for unknown parameter ${name}`);
      const p = new Float32Array(v.dataSync() as Float32Array);
      this.update(p, gt.dataSync() as Float32Array, this.slotsFor(name, p.length, v.shape), lr);
      tf.tidy(() => v.assign(tf.tensor(p, v.shape, "float32")));
    }
  }

  private slotsFor(name: string, size: number, shape: readonly number[] | undefined): Float32Array[] {
    let s = this.slots.get(name);
    if (!s) {
      s = new Map(this.slotNames.map((n) => [n, { shape: shape ? [...shape] : [size], data: new Float32Array(size) }]));
      this.slots.set(name, s);
    }
    const slots = s;
    return this.slotNames.map((n) => slots.get(n)!.data);
  }

  /** Nothing to free: the state is plain arrays. */
  dispose(): void {}
}

/** Adam/AdamW with bias correction, as torch.optim.Adam(W) and models/train.ts's `Adam`. */
export class ArrayAdam extends SlotArrays<"adam"> {
  constructor(options: AdamOptions = {}) {
    super("adam", options);
  }
  protected update(p: Float32Array, g: Float32Array, [m, v]: Float32Array[], lr: number): void {
    const { beta1, beta2, epsilon, weightDecay } = this.o;
    const c1 = 1 - beta1 ** this.step;
    const c2 = 1 - beta2 ** this.step;
    // The slots are read back as the float32 values they are stored as (Math.fround), as tfjs keeps them.
    for (let i = 0; i < p.length; i++) {
      const gi = g[i];
      const mi = Math.fround(m[i] * beta1 + gi * (1 - beta1));
      const vi = Math.fround(v[i] * beta2 + gi * gi * (1 - beta2));
      m[i] = mi;
      v[i] = vi;
      const pi = p[i];
      let next = pi - (mi / c1 / (Math.sqrt(vi / c2) + epsilon)) * lr;
      if (weightDecay > 0) next -= pi * lr * weightDecay;
      p[i] = next;
    }
  }
}

/** RMSprop as torch.optim.RMSprop (no momentum, not centered) and models/train.ts's `RMSprop`. */
export class ArrayRMSprop extends SlotArrays<"rmsprop"> {
  constructor(options: RMSpropOptions = {}) {
    super("rmsprop", options);
  }
  protected update(p: Float32Array, g: Float32Array, [v]: Float32Array[], lr: number): void {
    const { alpha, epsilon } = this.o;
    for (let i = 0; i < p.length; i++) {
      const gi = g[i];
      const vi = Math.fround(v[i] * alpha + gi * gi * (1 - alpha)); // as stored (float32)
      v[i] = vi;
      p[i] -= (gi / (Math.sqrt(vi) + epsilon)) * lr;
    }
  }
}

/** Rebuilds an array optimizer from a state written by either path. */
export function arrayOptimizerFromState(state: OptimizerState): ArrayAdam | ArrayRMSprop {
  return state.kind === "adam" ? ArrayAdam.fromState(state) : ArrayRMSprop.fromState(state);
}

/**
 * Scales all gradients in place by min(1, maxNorm / (‖g‖₂ + 1e-6)), ‖g‖₂ the global norm (as
 * `torch.nn.utils.clip_grad_norm_` and models/train.ts's `clipGradNorm`); returns the norm before clipping.
 */
export function clipGradNormInPlace(grads: ReadonlyMap<string, Float32Array>, maxNorm: number): number {
  if (!(maxNorm > 0)) throw new TypeError(`maxNorm must be > 0, got ${maxNorm}`);
  // Four float64 accumulators: no dependency chain between consecutive elements (a third faster at 124 M).
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  for (const g of grads.values()) {
    let i = 0;
    for (; i + 3 < g.length; i += 4) {
      a += g[i] * g[i];
      b += g[i + 1] * g[i + 1];
      c += g[i + 2] * g[i + 2];
      d += g[i + 3] * g[i + 3];
    }
    for (; i < g.length; i++) a += g[i] * g[i];
  }
  const norm = Math.sqrt(a + b + c + d);
  const scale = Math.min(1, maxNorm / (norm + 1e-6));
  if (scale < 1) for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i] *= scale;
  return norm;
}
