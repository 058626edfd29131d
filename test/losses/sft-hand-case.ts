import * as tf from '@tensorflow/tfjs';
import { expect } from 'vitest';
import { tokenLogprobs } from '../../losses/logprobs.js';
import { sftLoss } from '../../losses/sft.js';

/**
 * The SFT case worked by hand (on every backend that runs it). B = 1, T = 3, V = 3; position 0 is
 * prompt (mask 0), positions 1, 2 response: N = 2.
 *   position 1: logits (0, 0, 0), label 0 → −log p = ln 3 = 1.0986123
 *   position 2: logits (1, 2, 3), label 2 → −log p = 0.4076060
 *   loss = (1.0986123 + 0.4076060) / 2 = 0.7531091
 *   d loss / d z = (softmax(z) − onehot(label)) / N:
 *     position 1: (1/3 − 1, 1/3, 1/3)/2 = (−1/3, 1/6, 1/6)
 *     position 2: (0.0900306, 0.2447285, 0.6652410 − 1)/2 = (0.0450153, 0.1223642, −0.1673795)
 * Asserts the loss, an exactly zero gradient at the masked position and the hand values elsewhere.
 */
export function checkSftHandCase(): void {
  const logits = tf.tensor3d([[[5, -4, 9], [0, 0, 0], [1, 2, 3]]]);
  const labels = tf.tensor2d([[1, 0, 2]], undefined, 'int32');
  const mask = tf.tensor2d([[0, 1, 1]]);
  const lossOf = (z: tf.Tensor) => sftLoss(tokenLogprobs(z as tf.Tensor3D, labels), mask).loss;
  expect(lossOf(logits).dataSync()[0]).toBeCloseTo(0.7531091, 5);
  const g = (tf.grad(lossOf)(logits).arraySync() as number[][][])[0]!;
  expect(g[0]!.map(Math.abs)).toEqual([0, 0, 0]);
  const expected = [[-1 / 3, 1 / 6, 1 / 6], [0.0450153, 0.1223642, -0.1673795]];
  for (let t = 0; t < 2; t++) for (let v = 0; v < 3; v++) expect(g[t + 1]![v]).toBeCloseTo(expected[t]![v]!, 5);
}
