/**
 * The project's one seeded PRNG: xoshiro128** seeded through splitmix32, so that sampling, weight initialisation,
 * prompt splits, shuffles and `sppo nash` are reproducible across runs, backends and machines (`Math.random` and
 * tfjs's global RNG are never used). Its whole state is four 32-bit words, so a checkpoint can save it and a resumed
 * run draws exactly the numbers the uninterrupted one would have drawn. Tests: test/lib/rng.test.ts.
 *
 * Streams: one seed gives many independent generators, told apart by `stream` (e.g. the row of a batch, so one row
 * does not shift another's draws). The seed word is lo ^ hi·0x165667b1 ^ (stream + 1)·0x27d4eb2f (32-bit products);
 * `new Rng(seed)` without a stream leaves the last term out — the seed's base stream, which the trainer's shuffles
 * and `sppo nash` draw from — while `createRng(seed)` is stream 0. Both are kept exactly as they were when they were
 * two generators, so saved seeds, golden tokens and resumed runs draw what they always drew.
 */

/** The serialisable state of an `Rng`: four unsigned 32-bit words, not all zero. */
export type RngState = [number, number, number, number];

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** splitmix32 from `state`: the seeding sequence of the four state words. */
function splitmix32(state: number): () => number {
  let s = state >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Rng {
  // The four state words, kept as plain numbers (not a typed array): the sampler draws once per token.
  private a = 0;
  private b = 0;
  private c = 0;
  private d = 0;
  /** Box–Muller's second value, handed out by the next normal(). Not part of `getState()`. */
  private spare: number | undefined;

  /**
   * A generator for `seed` (an integer: a number up to 2^53 or a bigint, of which the low 64 bits are used;
   * different seeds give unrelated streams) and `stream` (see the file header; none is the seed's base stream).
   */
  constructor(seed: number | bigint = 0, stream?: number) {
    let lo: number;
    let hi: number;
    if (typeof seed === "bigint") {
      lo = Number(seed & 0xffffffffn);
      hi = Number((seed >> 32n) & 0xffffffffn);
    } else {
      lo = seed >>> 0;
      hi = Math.floor(seed / 2 ** 32) >>> 0;
    }
    let word = lo ^ Math.imul(hi, 0x165667b1);
    if (stream !== undefined) word ^= Math.imul(stream + 1, 0x27d4eb2f);
    const mix = splitmix32(word);
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** A generator continuing from a saved state. */
  static fromState(state: RngState): Rng {
    const rng = new Rng(0);
    rng.setState(state);
    return rng;
  }

  getState(): RngState {
    return [this.a >>> 0, this.b >>> 0, this.c >>> 0, this.d >>> 0];
  }

  setState(state: RngState): void {
    if (!Array.isArray(state) || state.length !== 4 || state.some((w) => !Number.isInteger(w) || w < 0 || w > 0xffffffff)) {
      throw new TypeError(`rng state must be four unsigned 32-bit integers, got ${JSON.stringify(state)}`);
    }
    if (state.every((w) => w === 0)) throw new TypeError("rng state must not be all zero");
    [this.a, this.b, this.c, this.d] = state;
    this.spare = undefined;
  }

  /** Next unsigned 32-bit integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform float in [0, 1) with 32 bits of randomness. */
  next(): number {
    return this.nextU32() / 2 ** 32;
  }

  /** Standard normal (Box–Muller: two uniforms give two normals, the second kept for the next call). */
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** An index drawn with probability proportional to `weights` (non-negative, positive sum). */
  categorical(weights: readonly number[]): number {
    let total = 0;
    for (const w of weights) total += w;
    if (!(total > 0)) throw new RangeError("categorical: weights must have a positive sum");
    let u = this.next() * total;
    for (let i = 0; i < weights.length; i++) {
      u -= weights[i];
      if (u < 0) return i;
    }
    // Rounding left u ≥ 0 after the last weight: return the last index with positive weight.
    for (let i = weights.length - 1; i >= 0; i--) if (weights[i] > 0) return i;
    return weights.length - 1;
  }

  /** Fisher–Yates shuffle in place; returns `items`. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      const tmp = items[i];
      items[i] = items[j];
      items[j] = tmp;
    }
    return items;
  }
}

/** The generator of one stream of `seed`: `new Rng(seed, stream)` (stream 0 by default), e.g. row `stream` of a batch. */
export function createRng(seed: number, stream = 0): Rng {
  return new Rng(seed, stream);
}
