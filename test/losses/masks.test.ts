import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { dpoSigmoidLoss } from '../../losses/dpo.js';
import { sequenceLogps, tokenLogprobs } from '../../losses/logprobs.js';
import { formattingTokenMask } from '../../losses/masks.js';
import { expectNoLeak } from './tensor-count.js';

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
});

// Llama 3 ids: <|start_header_id|> 128006, <|end_header_id|> 128007, <|eot_id|> 128009.
const FORMATTING = [128006, 128007, 128009];

describe('formattingTokenMask', () => {
  it('zeroes exactly the listed ids inside the response mask', () => {
    const ids = tf.tensor2d([[128006, 9125, 128007, 271, 40, 128009], [5, 128009, 128001, 128007, 7, 8]], undefined, 'int32');
    const response = tf.tensor2d([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]);
    const mask = formattingTokenMask(ids, response, FORMATTING);
    expect(mask.dtype).toBe('float32');
    // Row 0: 128006 is outside the response anyway; 128007 and 128009 drop. Row 1: 128009, 128007 drop;
    // 128001 (<|end_of_text|>, not listed) stays; the padding 0 stays 0.
    expect(mask.arraySync()).toEqual([[0, 0, 0, 1, 1, 0], [1, 0, 1, 0, 1, 0]]);
  });

  it('returns the response mask unchanged for an empty list', () => {
    const response = tf.tensor2d([[0, 1, 1]]);
    expect(formattingTokenMask(tf.tensor2d([[1, 2, 3]], undefined, 'int32'), response, []).arraySync()).toEqual([[0, 1, 1]]);
  });

  it('gives a DPO loss whose gradient at formatting positions is exactly 0', () => {
    // V = 4, formatting id 3. Chosen labels (1, 3, 2), rejected labels (3, 0, 2); all response.
    // After masking, position 1 of chosen and position 0 of rejected must get no gradient.
    const labelsChosen = tf.tensor2d([[1, 3, 2]], undefined, 'int32');
    const labelsRejected = tf.tensor2d([[3, 0, 2]], undefined, 'int32');
    const response = tf.ones([1, 3]) as tf.Tensor2D;
    const maskChosen = formattingTokenMask(labelsChosen, response, [3]);
    const maskRejected = formattingTokenMask(labelsRejected, response, [3]);
    expect(maskChosen.arraySync()).toEqual([[1, 0, 1]]);
    expect(maskRejected.arraySync()).toEqual([[0, 1, 1]]);
    const refChosen = tf.tensor1d([-3]);
    const refRejected = tf.tensor1d([-3]);
    const logitsChosen = tf.tensor3d([[[0.1, 0.5, -0.2, 2], [1, 0, 0, 3], [0, 0, 1, 0.5]]]);
    const logitsRejected = tf.tensor3d([[[0, 1, 0, 4], [0.3, 0.2, 0.1, 0], [1, 1, 1, 1]]]);
    const [gChosen, gRejected] = tf.grads((lc: tf.Tensor, lr: tf.Tensor) => {
      const chosen = sequenceLogps(tokenLogprobs(lc as tf.Tensor3D, labelsChosen), maskChosen);
      const rejected = sequenceLogps(tokenLogprobs(lr as tf.Tensor3D, labelsRejected), maskRejected);
      const { losses } = dpoSigmoidLoss({ policyChosenLogps: chosen, policyRejectedLogps: rejected, refChosenLogps: refChosen, refRejectedLogps: refRejected }, { beta: 0.1 });
      return tf.mean(losses);
    })([logitsChosen, logitsRejected]);
    const c = gChosen.arraySync() as number[][][];
    const r = gRejected.arraySync() as number[][][];
    expect(c[0][1].map(Math.abs)).toEqual([0, 0, 0, 0]);
    expect(r[0][0].map(Math.abs)).toEqual([0, 0, 0, 0]);
    // The counted positions do get a gradient.
    expect(Math.max(...c[0][0].map(Math.abs))).toBeGreaterThan(1e-3);
    expect(Math.max(...r[0][1].map(Math.abs))).toBeGreaterThan(1e-3);
  });

  it('rejects float ids and mismatched shapes', () => {
    const response = tf.ones([1, 2]) as tf.Tensor2D;
    expect(() => formattingTokenMask(tf.tensor2d([[1, 2]]), response, [1])).toThrow(/ids dtype is float32/);
    expect(() => formattingTokenMask(tf.tensor2d([[1, 2, 3]], undefined, 'int32'), response, [1])).toThrow(/responseMask shape \[1,2\]/);
  });

  it('leaks no tensor', () => {
    const ids = tf.tensor2d([[128006, 5, 128009]], undefined, 'int32');
    const response = tf.tensor2d([[1, 1, 1]]);
    expectNoLeak(() => formattingTokenMask(ids, response, FORMATTING));
    expectNoLeak(() => formattingTokenMask(ids, response, []));
  });
});
