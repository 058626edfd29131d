import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { sftLoss } from '../../losses/sft.js';
import { expectNoLeak } from './tensor-count.js';
import { checkSftHandCase } from './sft-hand-case.js';

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
});

describe('sftLoss', () => {
  it('averages −log p over the response tokens of the whole batch, not per row', () => {
    // Row 0: prompt, prompt, response (−2) → 1 token; row 1: 3 response tokens (−1, −3, −0.5), then padding.
    // Token mean: (2 + 1 + 3 + 0.5) / 4 = 1.625. (A mean of row means would be (2 + 1.5)/2 = 1.75.)
    const logps = tf.tensor2d([[-9, -9, -2, -7], [-1, -3, -0.5, -100]]);
    const mask = tf.tensor2d([[0, 0, 1, 0], [1, 1, 1, 0]]);
    const { loss, numTokens } = sftLoss(logps, mask);
    expect(loss.dataSync()[0]).toBeCloseTo(1.625, 6);
    expect(numTokens).toBe(4);
  });

  it('gives 0 with no response token', () => {
    const { loss, numTokens } = sftLoss(tf.tensor2d([[-1, -2]]), tf.zeros([1, 2]) as tf.Tensor2D);
    expect(Math.abs(loss.dataSync()[0])).toBe(0);
    expect(numTokens).toBe(0);
  });

  it('has exactly zero gradient at masked (prompt) positions, softmax − onehot over N elsewhere', () => {
    checkSftHandCase(); // worked by hand in sft-hand-case.ts
  });

  it('leaks no tensor', () => {
    const logps = tf.tensor2d([[-1, -2, -3]]);
    const mask = tf.tensor2d([[0, 1, 1]]);
    expectNoLeak(() => sftLoss(logps, mask));
  });
});
