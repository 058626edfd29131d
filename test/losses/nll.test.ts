import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { dpoSigmoidLoss } from '../../losses/dpo.js';
import { sequenceLogps } from '../../losses/logprobs.js';
import { chosenNllLoss, preferenceWithNllLoss } from '../../losses/nll.js';
import { expectNoLeak } from './tensor-count.js';

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
});

// Chosen token log-probs of 2 rows; row 0 counts 2 tokens, row 1 counts 1:
//   NLL = (1 + 2 + 0.5) / 3 = 7/6 = 1.1666667 (token mean over the batch, not (1.5 + 0.5)/2 = 1)
const chosenTokenValues = [[-1, -2, -3], [-9, -0.5, -7]];
const chosenMaskValues = [[1, 1, 0], [0, 1, 0]];

describe('chosenNllLoss', () => {
  it('is the mean token cross-entropy over the chosen responses', () => {
    expect(chosenNllLoss(tf.tensor2d(chosenTokenValues), tf.tensor2d(chosenMaskValues)).dataSync()[0]).toBeCloseTo(7 / 6, 6);
  });

  it('has gradient −1/N on counted tokens and exactly 0 elsewhere', () => {
    const g = tf.grad((t: tf.Tensor) => chosenNllLoss(t as tf.Tensor2D, tf.tensor2d(chosenMaskValues)))(tf.tensor2d(chosenTokenValues));
    const values = g.arraySync() as number[][];
    expect(values[0][0]).toBeCloseTo(-1 / 3, 6);
    expect(values[1][1]).toBeCloseTo(-1 / 3, 6);
    expect(Math.abs(values[0][2])).toBe(0);
    expect(Math.abs(values[1][0])).toBe(0);
  });
});

describe('preferenceWithNllLoss (RPO / Llama 3)', () => {
  it('equals ln 2 + α·nll when the policy equals the reference', () => {
    // DPO sigmoid loss with h = 0 is ln 2 = 0.6931472 per pair; α = 0.2; nll = 7/6.
    // total = 0.6931472 + 0.2 · 1.1666667 = 0.9264805
    const tokens = tf.tensor2d(chosenTokenValues);
    const mask = tf.tensor2d(chosenMaskValues);
    const chosen = sequenceLogps(tokens, mask); // (−3, −0.5)
    const rejected = tf.tensor1d([-4, -6]);
    const dpo = dpoSigmoidLoss(
      { policyChosenLogps: chosen, policyRejectedLogps: rejected, refChosenLogps: chosen, refRejectedLogps: rejected },
      { beta: 0.1 },
    );
    const total = preferenceWithNllLoss(dpo.losses, chosenNllLoss(tokens, mask), 0.2);
    expect(total.dataSync()[0]).toBeCloseTo(Math.log(2) + 0.2 * (7 / 6), 6);
    expect(total.dataSync()[0]).toBeCloseTo(0.9264805, 6);
  });

  it('is plain mean DPO at α = 0 and rejects a negative α', () => {
    const losses = tf.tensor1d([1, 2, 6]);
    expect(preferenceWithNllLoss(losses, tf.scalar(10), 0).dataSync()[0]).toBeCloseTo(3, 6);
    expect(() => preferenceWithNllLoss(losses, tf.scalar(10), -0.2)).toThrow(/nllCoefficient = -0.2/);
  });

  it('leaks no tensor', () => {
    const tokens = tf.tensor2d(chosenTokenValues);
    const mask = tf.tensor2d(chosenMaskValues);
    const losses = tf.tensor1d([1, 2]);
    const nll = tf.scalar(1);
    expectNoLeak(() => chosenNllLoss(tokens, mask));
    expectNoLeak(() => preferenceWithNllLoss(losses, nll, 0.2));
  });
});
