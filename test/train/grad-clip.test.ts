import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { clipByGlobalNorm, globalNorm } from '../../src/train/grad-clip.js';

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
});

/** ‖a‖ = ‖[3, 4]‖ = 5, ‖b‖ = ‖[[0, 12]]‖ = 12, global √(25 + 144) = 13. */
function makeGrads(): Map<string, tf.Tensor> {
  return new Map<string, tf.Tensor>([
    ['a', tf.tensor1d([3, 4])],
    ['b', tf.tensor2d([[0, 12]])],
  ]);
}

describe('grad-clip', () => {
  it('computes the global 2-norm over all tensors', () => {
    const grads = makeGrads();
    expect(globalNorm(grads)).toBeCloseTo(13, 5);
    expect(globalNorm(new Map())).toBe(0);
    tf.dispose([...grads.values()]);
  });

  it('scales by maxNorm / (norm + 1e-6), returns the pre-clip norm and disposes the replaced tensors', () => {
    const grads = makeGrads();
    const inputs = [...grads.values()];
    const before = tf.memory().numTensors;
    const { grads: clipped, norm } = clipByGlobalNorm(grads, 6.5);
    expect(norm).toBeCloseTo(13, 5);
    // scale = 6.5 / 13.000001 = 0.49999996
    const scale = 6.5 / (13 + 1e-6);
    expect(Array.from(clipped.get('a')!.dataSync())).toEqual([3, 4].map((x) => Math.fround(x * Math.fround(scale))));
    expect(Array.from(clipped.get('b')!.dataSync())).toEqual([0, 12].map((x) => Math.fround(x * Math.fround(scale))));
    expect(clipped.get('b')!.shape).toEqual([1, 2]);
    expect(globalNorm(clipped)).toBeCloseTo(6.5, 4);
    expect(inputs.every((t) => t.isDisposed)).toBe(true);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([...clipped.values()]);
  });

  it('leaves gradients under the threshold (and zero or non-finite ones) as they are', () => {
    const grads = makeGrads();
    const result = clipByGlobalNorm(grads, 13.5);
    expect(result.grads).toBe(grads);
    expect(result.norm).toBeCloseTo(13, 5);
    expect(Array.from(grads.get('a')!.dataSync())).toEqual([3, 4]);
    tf.dispose([...grads.values()]);

    const zeros = new Map<string, tf.Tensor>([['z', tf.zeros([3])]]);
    expect(clipByGlobalNorm(zeros, 1)).toEqual({ grads: zeros, norm: 0 });
    tf.dispose([...zeros.values()]);

    const withNaN = new Map<string, tf.Tensor>([['n', tf.tensor1d([1, NaN])]]);
    const nanResult = clipByGlobalNorm(withNaN, 1);
    expect(Number.isNaN(nanResult.norm)).toBe(true);
    expect(nanResult.grads).toBe(withNaN);
    tf.dispose([...withNaN.values()]);

    expect(() => clipByGlobalNorm(new Map(), 0)).toThrow(/maxNorm must be a finite number > 0/);
  });
});
