/**
 * Add / Sub / Multiply / RealDiv on the native addon (src/kernels/native-binary.ts) against wasm's
 * own kernels — bit for bit, since both are single IEEE operations — over the broadcast patterns a
 * training step makes; the shape collapsing worked by hand; the cases left to wasm.
 */
import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { loadNativeAddon } from '../../src/kernels/native-addon.js';
import { collapseBroadcast } from '../../src/kernels/native-binary.js';
import { setMatMulPath } from '../../src/kernels/wasm-kernels.js';

const native = loadNativeAddon();

/** Runs `make` and reads its result; the tensors it made are disposed. (Read outside tf.tidy: tidy walks a returned typed array element by element.) */
function readOnce(make: () => tf.Tensor): Float32Array {
  const t = tf.tidy(make);
  const values = t.dataSync() as Float32Array;
  t.dispose();
  return values;
}

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
});

afterEach(() => {
  delete process.env.TFALIGN_NATIVE_THREADS;
  if (native.addon) setMatMulPath('native');
});

describe('collapseBroadcast', () => {
  it('merges axes that broadcast alike and drops size-1 output axes', () => {
    // [8, 255, 1] · [8, 255, 8192]: the two leading axes merge (both full), the last broadcasts a.
    expect(collapseBroadcast([8, 255, 1], [8, 255, 8192], [8, 255, 8192])).toEqual({ shape: [2040, 8192], aStrides: [1, 0], bStrides: [8192, 1] });
    // a scalar times a matrix: one axis, a broadcast everywhere.
    expect(collapseBroadcast([], [384, 1024], [384, 1024])).toEqual({ shape: [393216], aStrides: [0], bStrides: [1] });
    // a causal mask [8, 1, 1, T, T] added to scores [8, 2, 3, T, T]: b skips the head axes.
    expect(collapseBroadcast([8, 2, 3, 4, 4], [8, 1, 1, 4, 4], [8, 2, 3, 4, 4])).toEqual({ shape: [8, 6, 16], aStrides: [96, 16, 1], bStrides: [16, 0, 1] });
    // a per-feature weight [384] over rows [2048, 384], and both sides broadcasting: [3, 1] + [1, 5].
    expect(collapseBroadcast([2048, 384], [384], [2048, 384])).toEqual({ shape: [2048, 384], aStrides: [384, 1], bStrides: [0, 1] });
    expect(collapseBroadcast([3, 1], [1, 5], [3, 5])).toEqual({ shape: [3, 5], aStrides: [1, 0], bStrides: [0, 1] });
    expect(collapseBroadcast([1, 1], [1], [1, 1])).toEqual({ shape: [1], aStrides: [0], bStrides: [0] });
  });
});

describe.skipIf(!native.addon)('native binary arithmetic', () => {
  it('adds, subtracts, multiplies and divides by hand: [1, 2, 3, 4] ∘ [4, 3, 2, 1]', () => {
    const a = tf.tensor1d([1, 2, 3, 4]);
    const b = tf.tensor1d([4, 3, 2, 1]);
    expect(Array.from(tf.add(a, b).dataSync())).toEqual([5, 5, 5, 5]);
    expect(Array.from(tf.sub(a, b).dataSync())).toEqual([-3, -1, 1, 3]);
    expect(Array.from(tf.mul(a, b).dataSync())).toEqual([4, 6, 6, 4]);
    expect(Array.from(tf.div(a, b).dataSync())).toEqual([0.25, Math.fround(2 / 3), 1.5, 4]);
    expect(Array.from(tf.div(tf.tensor1d([1, -1, 0, 5]), tf.tensor1d([0, 0, 0, Infinity])).dataSync())).toEqual([Infinity, -Infinity, NaN, 0]);
  });

  it('is bit-identical to wasm’s kernels on every broadcast pattern of a training step, with 1 and 2 threads', () => {
    const patterns: [number[], number[]][] = [
      [[64, 300], [64, 300]],
      [[16, 30, 1], [16, 30, 700]], // softmax gradient factor [B, T, 1]
      [[16, 30, 700], [16, 30, 1]],
      [[600, 1], [600, 384]], // RMSNorm's per-row scale
      [[600, 384], [384]], // a per-feature weight
      [[], [500, 600]], // a scalar (learning rate, β)
      [[500, 600], []],
      [[4, 2, 3, 40, 40], [4, 1, 1, 40, 40]], // a mask over heads
      [[7, 1, 9], [1, 5, 9]], // both sides broadcast
    ];
    let numCompared = 0;
    for (const [aShape, bShape] of patterns) {
      const a = tf.randomNormal(aShape, 0, 1, 'float32', 1);
      const b = tf.add(tf.abs(tf.randomNormal(bShape, 0, 1, 'float32', 2)), 0.5); // away from 0 for division
      for (const op of [tf.add, tf.sub, tf.mul, tf.div]) {
        setMatMulPath('xnnpack');
        const want = readOnce(() => op(a, b));
        for (const threads of ['1', '2']) {
          process.env.TFALIGN_NATIVE_THREADS = threads;
          setMatMulPath('native');
          const got = readOnce(() => op(a, b));
          expect(got.length, `${aShape} ${bShape}`).toBe(want.length);
          let numDiffs = 0;
          for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) numDiffs++;
          expect(numDiffs, `${op.name} ${aShape} ${bShape} threads=${threads}`).toBe(0);
          numCompared++;
        }
      }
      tf.dispose([a, b]);
    }
    expect(numCompared).toBe(patterns.length * 4 * 2);
  });

  it('leaves int32 and short innermost runs to wasm, with the right answers', () => {
    expect(Array.from(tf.add(tf.tensor1d([1, 2], 'int32'), tf.tensor1d([3, 4], 'int32')).dataSync())).toEqual([4, 6]);
    expect(tf.mul(tf.tensor2d([[1], [2]]), tf.tensor2d([[3, 4]])).arraySync()).toEqual([[3, 4], [6, 8]]);
  });
});
