/**
 * Logits of the tiny GPT-2 and Llama fixtures against the independent PyTorch computation in
 * scripts/torch/make_fixtures.py, on every backend; plus the KV-cache and padding paths against the plain forward.
 * Run: node --import tsx --test test/models/forward.test.ts
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { disposeCache, initBackend, loadModel } from "../../models/index.js";
import { BACKENDS, FIXTURES, maxAbsDiff, readExpected } from "./helpers.js";

for (const backend of BACKENDS) {
  describe(`forward on ${backend}`, () => {
    for (const family of ["gpt2", "llama"]) {
      it(`${family} logits match PyTorch to 1e-4`, async () => {
        await initBackend(backend);
        assert.equal(tf.getBackend(), backend);
        const { model } = loadModel(join(FIXTURES, family));
        const expected = readExpected(family);
        const ids = tf.tensor2d(expected.ids, undefined, "int32");
        const { logits } = model.forward(ids);
        assert.deepEqual(logits.shape, expected.shape);
        const diff = maxAbsDiff(logits.dataSync(), expected.logits);
        assert.ok(diff < 1e-4, `max |Δlogit| = ${diff}`);
        tf.dispose([ids, logits]);
        model.dispose();
      });

      it(`${family}: cached step-by-step decoding and left padding give the full-sequence logits`, async () => {
        await initBackend(backend);
        const { model } = loadModel(join(FIXTURES, family));
        const expected = readExpected(family);
        const [B, T, V] = expected.shape;
        const before = tf.memory().numTensors;
        // Prefill 3 tokens, then one token per step with the cache.
        const ids = tf.tensor2d(expected.ids, undefined, "int32");
        const prefix = ids.slice([0, 0], [B, 3]) as tf.Tensor2D;
        let out = model.forward(prefix, { useCache: true });
        prefix.dispose();
        const got: number[][] = Array.from({ length: B }, () => []);
        const take = (logits: tf.Tensor3D) => {
          const d = logits.dataSync();
          const t = logits.shape[1];
          for (let b = 0; b < B; b++) got[b].push(...d.slice(b * t * V, (b + 1) * t * V));
        };
        take(out.logits);
        for (let t = 3; t < T; t++) {
          const step = ids.slice([0, t], [B, 1]) as tf.Tensor2D;
          const next = model.forward(step, { cache: out.cache, useCache: true });
          out.logits.dispose();
          disposeCache(out.cache);
          step.dispose();
          out = next;
          take(out.logits);
        }
        out.logits.dispose();
        disposeCache(out.cache);
        assert.ok(maxAbsDiff(got.flat(), expected.logits) < 1e-4, "cached decoding differs from the full forward");

        // Row 1 left-padded by 3 with garbage ids: its real positions must give the same logits.
        const padded = tf.tensor2d([[...expected.ids[0], 0, 0, 0].slice(0, T + 3), [7, 7, 7, ...expected.ids[1]]], undefined, "int32");
        const mask = tf.tensor2d([[...Array(T).fill(1), 0, 0, 0], [0, 0, 0, ...Array(T).fill(1)]]);
        const positions = tf.tensor2d([[...Array(T + 3).keys()], [0, 0, 0, ...Array(T).keys()]], undefined, "int32");
        const res = model.forward(padded, { attentionMask: mask, positions });
        const all = res.logits.dataSync();
        const row0 = all.slice(0, T * V);
        const row1 = all.slice((T + 3) * V + 3 * V, 2 * (T + 3) * V);
        assert.ok(maxAbsDiff(row0, expected.logits.slice(0, T * V)) < 1e-4, "right-padded row differs");
        assert.ok(maxAbsDiff(row1, expected.logits.slice(T * V)) < 1e-4, "left-padded row differs");
        tf.dispose([ids, padded, mask, positions, res.logits]);
        assert.equal(tf.memory().numTensors, before, "forward leaked tensors");
        model.dispose();
      });
    }
  });
}
