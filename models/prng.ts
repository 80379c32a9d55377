/**
 * A small seeded PRNG (xoshiro128**, seeded through splitmix32) so that sampling and initialisation are reproducible
 * across runs, backends and machines. `Math.random` and tfjs's global RNG are never used by the engine.
 * Each request gets its own generator from (seed, stream), so one row of a batch does not shift another's draws.
 */

/** A stream of uniform floats in [0, 1). */
export interface Rng {
  /** Next uniform float in [0, 1), 32 bits of randomness. */
  next(): number;
  /** Next standard normal (Box–Muller). */
  normal(): number;
}

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

/**
 * Creates an independent generator for `seed` (any integer; only its low 32 bits and the next 21 are used) and
 * `stream` (e.g. the row of a batch).
 */
export function createRng(seed: number, stream = 0): Rng {
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 2 ** 32) >>> 0;
  const mix = splitmix32(lo ^ Math.imul(stream + 1, 0x27d4eb2f) ^ Math.imul(hi, 0x165667b1));
  let a = mix();
  let b = mix();
  let c = mix();
  let d = mix();
  if ((a | b | c | d) === 0) a = 1;
  const nextU32 = (): number => {
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return result;
  };
  let spare: number | undefined;
  return {
    next: () => nextU32() / 2 ** 32,
    normal: () => {
      if (spare !== undefined) {
        const s = spare;
        spare = undefined;
        return s;
      }
      let u = 0;
      while (u === 0) u = nextU32() / 2 ** 32;
      const v = nextU32() / 2 ** 32;
      const r = Math.sqrt(-2 * Math.log(u));
      spare = r * Math.sin(2 * Math.PI * v);
      return r * Math.cos(2 * Math.PI * v);
    },
  };
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
