/**
 * The loss gradients on the wasm backend (the default one), where the gradient of `gather` runs
 * through the project's UnsortedSegmentSum kernel (src/kernels/wasm-kernels.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { dpoSigmoidLoss } from '../../losses/dpo.js';
import { sequenceLogps, tokenLogprobs } from '../../losses/logprobs.js';
import { checkSftHandCase } from './sft-hand-case.js';

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
});

describe('losses on wasm', () => {
  it('runs on wasm', () => {
    expect(tf.getBackend()).toBe('wasm');
  });

  it('SFT gradient w.r.t. logits matches the hand values, 0 at the masked position', () => {
    checkSftHandCase(); // the same case as sft.test.ts, now on wasm
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
