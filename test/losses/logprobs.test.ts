import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { maskedMean, sequenceLogps, tokenLogprobs, tokenNllSum } from '../../losses/logprobs.js';
import { expectNoLeak } from './tensor-count.js';

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
});

describe('tokenLogprobs', () => {
  // B = 1, T = 2, V = 3.
  // Position 0: logits (1, 2, 3), label 2.
  //   logsumexp = 3 + ln(1 + e^-1 + e^-2) = 3 + ln(1.5032147) = 3.4076060
  //   log p(2) = 3 − 3.4076060 = −0.4076060
  // Position 1: logits (0, 0, 0), label 0: log p(0) = −ln 3 = −1.0986123
  const logitsValues = [[[1, 2, 3], [0, 0, 0]]];
  const labelsValues = [[2, 0]];

  it('is the label logit minus logsumexp (hand-worked)', () => {
    const logits = tf.tensor3d(logitsValues);
    const labels = tf.tensor2d(labelsValues, undefined, 'int32');
    const logps = tokenLogprobs(logits, labels);
    expect(logps.shape).toEqual([1, 2]);
    const [a, b] = logps.dataSync();
    expect(a).toBeCloseTo(-0.407606, 5);
    expect(b).toBeCloseTo(-1.098612, 5);
    tf.dispose([logits, labels, logps]);
  });

  it('stays finite and exact for huge logits (shift by 1000 changes nothing)', () => {
    const logits = tf.tensor3d([[[1001, 1002, 1003], [-1000, -1000, -1000]]]);
    const labels = tf.tensor2d(labelsValues, undefined, 'int32');
    const [a, b] = tokenLogprobs(logits, labels).dataSync();
    expect(a).toBeCloseTo(-0.407606, 4);
    expect(b).toBeCloseTo(-1.098612, 4);
  });

  it('picks the right row in a batch (flat indices) — matches a one-hot reference', () => {
    // [2, 3, 5] logits with distinct values so a wrong flat offset would read another row.
    const logits = tf.tensor3d(Array.from({ length: 30 }, (_, i) => Math.sin(i * 1.7) * 3), [2, 3, 5]);
    const labels = tf.tensor2d([[4, 0, 2], [1, 3, 4]], undefined, 'int32');
    const ours = tokenLogprobs(logits, labels).arraySync();
    const reference = tf.tidy(() => tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(labels, 5)), -1)).arraySync() as number[][];
    for (let b = 0; b < 2; b++) for (let t = 0; t < 3; t++) expect(ours[b][t]).toBeCloseTo(reference[b][t], 5);
  });

  it('has gradient onehot − softmax w.r.t. the logits', () => {
    // d/dz log softmax(z)[y] = 1[y] − softmax(z).
    // Position 0: softmax(1,2,3) = (0.0900306, 0.2447285, 0.6652410) → (−0.0900306, −0.2447285, 0.3347590)
    // Position 1: softmax(0,0,0) = 1/3 each, label 0 → (2/3, −1/3, −1/3)
    const logits = tf.tensor3d(logitsValues);
    const labels = tf.tensor2d(labelsValues, undefined, 'int32');
    const grad = tf.grad((z: tf.Tensor) => tf.sum(tokenLogprobs(z as tf.Tensor3D, labels)))(logits);
    const g = grad.arraySync() as number[][][];
    const expected = [[[-0.0900306, -0.2447285, 0.334759], [2 / 3, -1 / 3, -1 / 3]]];
    for (let t = 0; t < 2; t++) for (let v = 0; v < 3; v++) expect(g[0][t][v]).toBeCloseTo(expected[0][t][v], 5);
  });

  it('rejects an ignore-index label (−100) and one past the vocabulary, naming the position', () => {
    const logits = tf.tensor3d(logitsValues);
    expect(() => tokenLogprobs(logits, tf.tensor2d([[2, -100]], undefined, 'int32'))).toThrow(/labels\[0, 1\] = -100/);
    expect(() => tokenLogprobs(logits, tf.tensor2d([[3, 0]], undefined, 'int32'))).toThrow(/labels\[0, 0\] = 3 is outside the vocabulary \[0, 3\)/);
    expect(() => tokenLogprobs(logits, tf.tensor2d([[2, 0]]))).toThrow(/int32/);
  });

  it('leaks no tensor', () => {
    const logits = tf.tensor3d(logitsValues);
    const labels = tf.tensor2d(labelsValues, undefined, 'int32');
    expectNoLeak(() => tokenLogprobs(logits, labels));
  });
});

describe('sequenceLogps and maskedMean', () => {
  // logps [[−1, −2, −3], [−0.5, −0.25, −4]], mask [[0, 1, 1], [1, 1, 0]]
  // sequence sums: −5, −0.75; masked mean over the 4 tokens: (−2 −3 −0.5 −0.25)/4 = −1.4375
  const logpsValues = [[-1, -2, -3], [-0.5, -0.25, -4]];
  const maskValues = [[0, 1, 1], [1, 1, 0]];

  it('sums each row over the mask', () => {
    const sums = sequenceLogps(tf.tensor2d(logpsValues), tf.tensor2d(maskValues)).dataSync();
    expect(sums[0]).toBeCloseTo(-5, 6);
    expect(sums[1]).toBeCloseTo(-0.75, 6);
  });

  it('averages over the unmasked tokens of the whole batch', () => {
    expect(maskedMean(tf.tensor2d(logpsValues), tf.tensor2d(maskValues)).dataSync()[0]).toBeCloseTo(-1.4375, 6);
  });

  it('tokenNllSum: minus the masked sum, 5.75, with gradient −mask', () => {
    const values = tf.tensor2d(logpsValues);
    const mask = tf.tensor2d(maskValues);
    expect(tokenNllSum(values, mask).dataSync()[0]).toBeCloseTo(5.75, 6);
    expect(Array.from(tf.grad((v: tf.Tensor) => tokenNllSum(v as tf.Tensor2D, mask))(values).dataSync(), (g) => g + 0)).toEqual([0, -1, -1, -1, -1, 0]); // + 0: −0 → 0
  });

  it('gives 0 and a zero (not NaN) gradient for an all-zero mask', () => {
    const values = tf.tensor2d(logpsValues);
    const zeros = tf.zeros([2, 3]);
    expect(maskedMean(values, zeros).dataSync()[0]).toBe(0);
    const grad = tf.grad((v: tf.Tensor) => maskedMean(v, zeros))(values).dataSync();
    expect(Array.from(grad)).toEqual([0, 0, 0, 0, 0, 0]);
  });

  it('rejects a mask of another shape', () => {
    expect(() => sequenceLogps(tf.tensor2d(logpsValues), tf.ones([2, 2]) as tf.Tensor2D)).toThrow(/losses\/logprobs.ts: sequenceLogps mask shape \[2,2\]/);
  });

  it('leaks no tensor', () => {
    const logps = tf.tensor2d(logpsValues);
    const mask = tf.tensor2d(maskValues);
    expectNoLeak(() => sequenceLogps(logps, mask));
    expectNoLeak(() => maskedMean(logps, mask));
    expectNoLeak(() => tokenNllSum(logps, mask));
  });
});
