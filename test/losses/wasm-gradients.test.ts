/**
 * The loss gradients on the wasm backend (the default one), where the gradient of `gather` runs
 * through the project's UnsortedSegmentSum kernel (src/kernels/wasm-kernels.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { dpoSigmoidLoss } from '../../losses/dpo.js';
import { sequenceLogps, tokenLogprobs } from '../../losses/logprobs.js';
import { sftLoss } from '../../losses/sft.js';

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
});

describe('losses on wasm', () => {
  it('runs on wasm', () => {
    expect(tf.getBackend()).toBe('wasm');
  });

  it('SFT gradient w.r.t. logits matches the hand values, 0 at the masked position', () => {
    // Same case as sft.test.ts: position 0 masked; positions 1 (logits 0,0,0, label 0) and
    // 2 (logits 1,2,3, label 2) counted, N = 2. Gradient = (softmax − onehot) / 2.
    const logits = tf.tensor3d([[[5, -4, 9], [0, 0, 0], [1, 2, 3]]]);
    const labels = tf.tensor2d([[1, 0, 2]], undefined, 'int32');
    const mask = tf.tensor2d([[0, 1, 1]]);
    const lossOf = (z: tf.Tensor) => sftLoss(tokenLogprobs(z as tf.Tensor3D, labels), mask).loss;
    expect(lossOf(logits).dataSync()[0]).toBeCloseTo(0.7531091, 5);
    const g = (tf.grad(lossOf)(logits).arraySync() as number[][][])[0];
    expect(g[0].map(Math.abs)).toEqual([0, 0, 0]);
    const expected = [[-1 / 3, 1 / 6, 1 / 6], [0.0450153, 0.1223642, -0.1673795]];
    for (let t = 0; t < 2; t++) for (let v = 0; v < 3; v++) expect(g[t + 1][v]).toBeCloseTo(expected[t][v], 5);
  });

  it('DPO sigmoid loss is ln 2 at policy = reference, and its logit gradient is −β/2 · (onehot − softmax)', () => {
    // h = 0 → σ(−βh) = 1/2, so d loss / d policyChosenLogps = −β/2 = −0.05.
    // Chosen logits (0, 0) with label 1: d logp / d z = onehot − softmax = (−0.5, 0.5) → gradient (0.025, −0.025).
    const logits = tf.tensor3d([[[0, 0]]]);
    const labels = tf.tensor2d([[1]], undefined, 'int32');
    const mask = tf.tensor2d([[1]]);
    const ref = tf.tensor1d([Math.log(0.5)]);
    const rejected = tf.tensor1d([-1]);
    const lossOf = (z: tf.Tensor) => {
      const chosen = sequenceLogps(tokenLogprobs(z as tf.Tensor3D, labels), mask);
      return tf.mean(dpoSigmoidLoss({ policyChosenLogps: chosen, policyRejectedLogps: rejected, refChosenLogps: ref, refRejectedLogps: rejected }, { beta: 0.1 }).losses);
    };
    expect(lossOf(logits).dataSync()[0]).toBeCloseTo(Math.log(2), 6);
    const g = tf.grad(lossOf)(logits).dataSync();
    expect(g[0]).toBeCloseTo(0.025, 6);
    expect(g[1]).toBeCloseTo(-0.025, 6);
  });
});
