import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { tokenLogprobs } from '../../losses/logprobs.js';
import { sftLoss } from '../../losses/sft.js';
import { expectNoLeak } from './tensor-count.js';

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
    // B = 1, T = 3, V = 3. Position 0 is prompt (mask 0), positions 1, 2 are response: N = 2.
    // Position 1: logits (0, 0, 0), label 0 → −log p = ln 3 = 1.0986123
    // Position 2: logits (1, 2, 3), label 2 → −log p = 0.4076060
    // loss = (1.0986123 + 0.4076060) / 2 = 0.7531091
    // d loss / d z = (softmax(z) − onehot(label)) / N:
    //   position 1: (1/3 − 1, 1/3, 1/3)/2 = (−1/3, 1/6, 1/6)
    //   position 2: (0.0900306, 0.2447285, 0.6652410 − 1)/2 = (0.0450153, 0.1223642, −0.1673795)
    const logits = tf.tensor3d([[[5, -4, 9], [0, 0, 0], [1, 2, 3]]]);
    const labels = tf.tensor2d([[1, 0, 2]], undefined, 'int32');
    const mask = tf.tensor2d([[0, 1, 1]]);
    const lossOf = (z: tf.Tensor) => sftLoss(tokenLogprobs(z as tf.Tensor3D, labels), mask).loss;
    expect(lossOf(logits).dataSync()[0]).toBeCloseTo(0.7531091, 5);
    const g = (tf.grad(lossOf)(logits).arraySync() as number[][][])[0];
    expect(g[0]).toEqual([0, 0, 0]);
    const expected = [[-1 / 3, 1 / 6, 1 / 6], [0.0450153, 0.1223642, -0.1673795]];
    for (let t = 0; t < 2; t++) for (let v = 0; v < 3; v++) expect(g[t + 1][v]).toBeCloseTo(expected[t][v], 5);
  });

  it('leaks no tensor', () => {
    const logps = tf.tensor2d([[-1, -2, -3]]);
    const mask = tf.tensor2d([[0, 1, 1]]);
    expectNoLeak(() => sftLoss(logps, mask));
  });
});
