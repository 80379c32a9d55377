/** The seeded RNG: reproducible, resumable from its saved state, and uniform enough (run: node --import tsx --test test/lib/rng.test.ts). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createRng, Rng } from "../../lib/rng.js";

test("draws match an independent implementation (test/lib/rng_reference.py), base stream and numbered streams", () => {
  const draws = (rng: Rng) => Array.from({ length: 4 }, () => rng.nextU32());
  assert.deepEqual(draws(new Rng(42)), [2837322924, 544945897, 479756282, 3500138142]);
  assert.deepEqual(draws(createRng(42)), [909790274, 3583909471, 494647558, 3022775609], "createRng(seed) is stream 0");
  assert.deepEqual(draws(new Rng(42, 3)), [661086063, 1181141563, 2378205984, 1684969782]);
  assert.deepEqual(draws(new Rng(2 ** 40 + 5, 1)), [1461856754, 612157115, 4274797114, 2699315969], "the seed's high word counts");
  assert.deepEqual(draws(new Rng(2n ** 40n + 5n, 1)), draws(new Rng(2 ** 40 + 5, 1)), "a bigint seed is the same seed");
});

test("same seed, same stream; different seeds differ", () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const xs = Array.from({ length: 100 }, () => a.next());
  assert.deepEqual(xs, Array.from({ length: 100 }, () => b.next()));
  assert.notDeepEqual(xs, Array.from({ length: 100 }, () => c.next()));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
});

test("a generator restored from its state continues the same stream", () => {
  const a = new Rng(7);
  for (let i = 0; i < 37; i++) a.next();
  const state = a.getState();
  const rest = Array.from({ length: 50 }, () => a.nextU32());
  const b = Rng.fromState(JSON.parse(JSON.stringify(state)));
  assert.deepEqual(Array.from({ length: 50 }, () => b.nextU32()), rest);
  assert.throws(() => Rng.fromState([0, 0, 0, 0]), /all zero/);
  assert.throws(() => Rng.fromState([1, 2, 3] as never), /four unsigned/);
});

test("categorical frequencies match the weights; shuffle is a permutation", () => {
  const rng = new Rng(1);
  const counts = [0, 0, 0];
  const n = 60_000;
  for (let i = 0; i < n; i++) counts[rng.categorical([0.5, 0.3, 0.2])]++;
  // Binomial standard deviation √(n p (1 − p)) ≤ 123: allow 5σ.
  for (const [i, p] of [0.5, 0.3, 0.2].entries()) assert.ok(Math.abs(counts[i] - n * p) < 615, `${i}: ${counts[i]}`);
  assert.equal(rng.categorical([0, 0, 1]), 2);
  const items = Array.from({ length: 20 }, (_, i) => i);
  const shuffled = rng.shuffle([...items]);
  assert.notDeepEqual(shuffled, items);
  assert.deepEqual([...shuffled].sort((x, y) => x - y), items);
});
