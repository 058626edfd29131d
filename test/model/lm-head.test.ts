import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { initModel } from '../../src/model/weights.js';
import { AUTO_MIN_CHUNK_VALUES, headChunkRows, labelLogprobs } from '../../src/model/lm-head.js';
import { batchTokenLogprobs } from '../../src/inference/token-logprobs.js';
import { computeGradients, disposeGrads } from '../../src/train/grad-accumulator.js';
import { causalLmLoss, causalLmUnits } from '../../src/tasks/causal-lm.js';
import { normalizedLoss } from '../../src/train/objective.js';
import { padRows } from '../../data/collate.js';
import type { LlamaModel } from '../../src/model/llama.js';

const raw = {
  vocab_size: 37,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  max_position_embeddings: 64,
  initializer_range: 0.3,
};
const batch = padRows(
  [
    { ids: [1, 5, 9, 12, 30, 2, 7, 7, 3], targetMask: [0, 0, 0, 1, 1, 1, 1, 1, 1] },
    { ids: [4, 4, 36, 8, 0], targetMask: [0, 1, 1, 1, 1] },
    { ids: [11, 12, 13], targetMask: [0, 0, 1] },
  ],
  0,
);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function lossAndGrads(model: LlamaModel): { loss: number; grads: Map<string, Float32Array> } {
  const { loss, grads } = computeGradients(model.params, () => normalizedLoss(causalLmLoss(model, batch).sums, causalLmUnits(batch)));
  const out = new Map([...grads].map(([n, g]) => [n, g.dataSync() as Float32Array]));
  disposeGrads(grads);
  return { loss, grads: out };
}

describe('chunked LM head', () => {
  beforeAll(async () => {
    await initBackend('cpu', { quiet: true });
  });

  for (const tied of [true, false]) {
    it(`${tied ? 'tied' : 'untied'}: the same log-probs and gradients (h and head) for every chunk size as the plain head`, () => {
      const model = initModel(parseLlamaConfig({ ...raw, tie_word_embeddings: tied }), 3);
      const h = tf.randomNormal([11, 16], 0, 1, 'float32', 4) as tf.Tensor2D;
      const labels = tf.tensor1d([0, 5, 36, 2, 2, 9, 17, 30, 1, 8, 20], 'int32');
      const { weight } = model.lmHeadWeight();
      const run = (chunk: number) => {
        const f = (hIn: tf.Tensor, w: tf.Tensor) => {
          void w;
          // a non-uniform upstream gradient: Σ_i (i+1)·log p_i
          return tf.sum(tf.mul(labelLogprobs(model, hIn as tf.Tensor2D, labels, chunk), tf.range(1, 12)));
        };
        const { value, grads } = tf.tidy(() => {
          const out = tf.valueAndGrads(f)([h, weight]);
          return { value: out.value.dataSync()[0], grads: out.grads.map((g) => g.dataSync() as Float32Array) };
        });
        return { value, grads, logps: tf.tidy(() => labelLogprobs(model, h, labels, chunk).dataSync()) };
      };
      const plain = run(0);
      for (const chunk of [1, 4, 11, 64]) {
        const chunked = run(chunk);
        expect(maxAbsDiff(chunked.logps, plain.logps)).toBeLessThan(1e-5);
        expect(chunked.value).toBeCloseTo(plain.value, 4);
        expect(maxAbsDiff(chunked.grads[0], plain.grads[0])).toBeLessThan(1e-5); // ∂h
        expect(maxAbsDiff(chunked.grads[1], plain.grads[1])).toBeLessThan(1e-5); // ∂W
      }
      // hand check of one value: log p(y) = z_y − log Σ exp z
      const z = tf.tidy(() => tf.matMul(h, weight, false, tied).arraySync() as number[][])[2];
      const lse = Math.log(z.reduce((a, v) => a + Math.exp(v), 0));
      expect(plain.logps[2]).toBeCloseTo(z[36] - lse, 4);
      h.dispose();
      labels.dispose();
      model.dispose();
    });
  }

  it('scores only the target positions (the rest read 0) with values equal to the full head', () => {
    const model = initModel(parseLlamaConfig({ ...raw, tie_word_embeddings: true }), 5);
    const all = tf.tidy(() => batchTokenLogprobs(model, batch).dataSync());
    model.headChunkTokens = 3;
    const targets = tf.tidy(() => batchTokenLogprobs(model, batch, { positions: 'targets' }).dataSync());
    for (let i = 0; i < all.length; i++) {
      if (batch.targets[i] === 1) expect(Math.abs(targets[i] - all[i])).toBeLessThan(1e-5);
      else expect(targets[i]).toBe(0);
    }
    model.dispose();
  });

  it('the causal-LM loss and every parameter gradient are the same with a chunked, targets-only head, and nothing leaks', () => {
    const model = initModel(parseLlamaConfig({ ...raw, tie_word_embeddings: true }), 6);
    const reference = tf.tidy(() => {
      // the plain path written out: full logits, masked mean
      const logps = batchTokenLogprobs(model, batch); // [B, T−1]
      return -tf.sum(tf.mul(logps, tf.tensor2d(batch.targets, [3, 8]))).dataSync()[0] / batch.numTargets;
    });
    const plain = lossAndGrads(model);
    expect(plain.loss).toBeCloseTo(reference, 5);
    model.headChunkTokens = 4;
    const before = tf.memory().numTensors;
    const chunked = lossAndGrads(model);
    expect(tf.memory().numTensors).toBe(before);
    expect(chunked.loss).toBeCloseTo(plain.loss, 5);
    for (const [name, g] of plain.grads) expect(maxAbsDiff(chunked.grads.get(name)!, g), name).toBeLessThan(1e-5);
    model.dispose();
  });

  it('a micro-batch without targets gives loss 0 and zero gradients (it stays connected to the weights)', () => {
    const model = initModel(parseLlamaConfig({ ...raw, tie_word_embeddings: true }), 6);
    const masked = padRows([{ ids: [1, 5, 9, 12], targetMask: [0, 0, 0, 0] }], 0);
    const { loss, grads } = computeGradients(model.params, () => causalLmLoss(model, masked).sums.tokens);
    expect(Math.abs(loss)).toBe(0);
    expect(grads.size).toBeGreaterThan(0);
    for (const g of grads.values()) expect(Math.max(...g.dataSync().map(Math.abs))).toBe(0);
    disposeGrads(grads);
    model.dispose();
  });
});

describe('head chunk sizes', () => {
  it('auto follows Liger-Kernel: N / ceil(V / C) rows, at least 2^22 logits a chunk, one pass for small heads', () => {
    // 1,022 positions of a 576-wide model under Llama 3's 128,256 tokens: N·C = 588,672 < 2^22,
    // so the floor decides: ⌊4,194,304 / 128,256⌋ = 32 rows (16 MiB of logits per copy)
    expect(headChunkRows(1022, 128_256, 576, 'auto')).toBe(32);
    // 8 × 2,048 positions of a 2,048-wide model: N·C = 33,554,432 values → ⌊33,554,432 / 128,256⌋ = 261 rows
    expect(headChunkRows(16_384, 128_256, 2048, 'auto')).toBe(261);
    // the quickstart's head (V 512): 8,192 rows a chunk ≥ 1,536 positions → one plain pass
    expect(headChunkRows(1536, 512, 128, 'auto')).toBe(8192);
    // fixed settings: 0 = all rows at once, n = n rows
    expect(headChunkRows(100, 49_152, 576, 0)).toBe(100);
    expect(headChunkRows(100, 49_152, 576, 16)).toBe(16);
  });

  it('auto keeps a chunk’s logits flat as the vocabulary grows 8 k → 128 k', () => {
    for (const vocab of [8192, 32_768, 49_152, 128_256]) {
      const rows = headChunkRows(1022, vocab, 576, 'auto');
      expect(rows * vocab).toBeLessThanOrEqual(AUTO_MIN_CHUNK_VALUES);
      expect((rows + 1) * vocab).toBeGreaterThan(AUTO_MIN_CHUNK_VALUES); // the largest chunk under the budget
    }
  });
});

describe('logprob reward head (LlamaModel.logprobRewards)', () => {
  beforeAll(async () => {
    await initBackend('cpu', { quiet: true });
  });

  const BETA = 2;
  // rows of 9 tokens: responses [3, 8], [1, 4], [2, 2] (first and last token index)
  const at = { inputIds: batch.inputIds, responseStart: [3, 1, 2], lastIndex: [8, 4, 2] };

  /** The same rewards from the full [B, T−1, V] logits: log-softmax, pick, mask, mean, × β. */
  function fromFullLogits(model: LlamaModel, hidden: tf.Tensor3D): tf.Tensor1D {
    const [b, t, c] = hidden.shape;
    const logits = model.logits(tf.slice(hidden, [0, 0, 0], [b, t - 1, c]) as tf.Tensor3D); // [B, T−1, V]
    const logps = tf.logSoftmax(logits); // [B, T−1, V]
    const mask = new Float32Array(b * (t - 1));
    const onehot = new Float32Array(b * (t - 1) * raw.vocab_size);
    for (let r = 0; r < b; r++) {
      for (let p = at.responseStart[r]! - 1; p < at.lastIndex[r]!; p++) mask[r * (t - 1) + p] = 1;
      for (let p = 0; p < t - 1; p++) onehot[(r * (t - 1) + p) * raw.vocab_size + at.inputIds[r * t + p + 1]!] = 1;
    }
    const picked = tf.sum(tf.mul(logps, tf.tensor3d(onehot, [b, t - 1, raw.vocab_size])), 2); // [B, T−1]
    const m = tf.tensor2d(mask, [b, t - 1]);
    return tf.mul(BETA, tf.div(tf.sum(tf.mul(picked, m), 1), tf.sum(m, 1))) as tf.Tensor1D; // [B]
  }

  for (const tied of [true, false]) {
    it(`${tied ? 'tied' : 'untied'}: the response positions alone give the full logits' rewards and gradients, plain or chunked`, () => {
      const model = initModel(parseLlamaConfig({ ...raw, tie_word_embeddings: tied, tfalign_reward: { head: 'logprob', beta: BETA } }), 5);
      expect(model.dims).toMatchObject({ rewardHead: 'logprob', rewardBeta: BETA });
      const hidden = tf.randomNormal([3, 9, 16], 0, 1, 'float32', 6) as tf.Tensor3D;
      const weights = tf.tensor1d([1, -2, 3]); // a non-uniform upstream gradient
      const rewardsAndGrads = (rewardsOf: (h: tf.Tensor3D) => tf.Tensor1D) => {
        const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(rewardsOf(hidden), weights)) as tf.Scalar, [...model.params.values()] as tf.Variable[]);
        const rewards = tf.tidy(() => rewardsOf(hidden).dataSync() as Float32Array);
        const out = { loss: value.dataSync()[0]!, rewards, grads: Object.fromEntries(Object.entries(grads).map(([n, g]) => [n, g.dataSync() as Float32Array])) };
        value.dispose();
        tf.dispose(Object.values(grads));
        return out;
      };
      const oracle = rewardsAndGrads((h) => fromFullLogits(model, h));
      expect(oracle.rewards.every((r) => r < 0)).toBe(true);
      for (const chunk of [0, 2]) {
        model.headChunkTokens = chunk;
        const before = tf.memory().numTensors;
        const ours = rewardsAndGrads((h) => model.logprobRewards(h, at).rewards);
        expect(tf.memory().numTensors).toBe(before);
        expect(maxAbsDiff(ours.rewards, oracle.rewards), `chunk ${chunk} rewards`).toBeLessThan(1e-5);
        const sums = tf.tidy(() => model.logprobRewards(hidden, at).sums.dataSync() as Float32Array);
        [6, 4, 1].forEach((n, r) => expect(sums[r]! * BETA / n).toBeCloseTo(oracle.rewards[r]!, 5)); // sums / numTokens · β
        for (const [name, g] of Object.entries(oracle.grads)) {
          expect(maxAbsDiff(ours.grads[name]!, g), `chunk ${chunk} d/d${name}`).toBeLessThan(1e-5);
        }
        expect(Object.values(oracle.grads).some((g) => g.some((x) => x !== 0))).toBe(true);
      }
      hidden.dispose();
      weights.dispose();
      model.dispose();
    });
  }
});
