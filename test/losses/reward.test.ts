import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { bradleyTerryLoss, rankingLoss, rewardMetrics, STRENGTH_MARGINS, strengthMargins } from '../../losses/reward.js';
import { expectNoLeak } from './tensor-count.js';

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
});

const scalar = (t: tf.Tensor) => t.dataSync()[0];

describe('bradleyTerryLoss', () => {
  it('is softplus(−(r_c − r_r)) without margin', () => {
    // r_c = 2, r_r = 0.5: −log σ(1.5) = ln(1 + e^−1.5) = ln(1.2231302) = 0.2014133
    const { losses } = bradleyTerryLoss({ chosenRewards: tf.tensor1d([2]), rejectedRewards: tf.tensor1d([0.5]) });
    expect(losses.shape).toEqual([1]);
    expect(scalar(losses)).toBeCloseTo(0.201413, 6);
  });

  it('subtracts the Llama 2 margin inside the sigmoid', () => {
    // m = 1: ln(1 + e^−0.5) = ln(1.6065307) = 0.4740770
    const { losses } = bradleyTerryLoss({ chosenRewards: tf.tensor1d([2]), rejectedRewards: tf.tensor1d([0.5]), margins: tf.tensor1d([1]) });
    expect(scalar(losses)).toBeCloseTo(0.474077, 6);
  });

  it('adds the centering term c·(r_c + r_r)²', () => {
    // c = 0.01: 0.2014133 + 0.01 · 2.5² = 0.2014133 + 0.0625 = 0.2639133
    const { losses } = bradleyTerryLoss(
      { chosenRewards: tf.tensor1d([2]), rejectedRewards: tf.tensor1d([0.5]) },
      { centeringCoefficient: 0.01 },
    );
    expect(scalar(losses)).toBeCloseTo(0.263913, 6);
  });

  it('reports accuracy and margin over the batch', () => {
    // Pairs (2, 0.5) and (0, 1): losses 0.2014133 and ln(1 + e^1) = 1.3132617;
    // accuracy 1/2; margin mean(1.5, −1) = 0.25.
    const result = bradleyTerryLoss({ chosenRewards: tf.tensor1d([2, 0]), rejectedRewards: tf.tensor1d([0.5, 1]) });
    const losses = result.losses.dataSync();
    expect(losses[0]).toBeCloseTo(0.201413, 6);
    expect(losses[1]).toBeCloseTo(1.313262, 6);
    expect(rewardMetrics(result)).toEqual({ accuracy: 0.5, margin: 0.25 });
  });

  it('stays finite for a huge reward gap', () => {
    // softplus(−(−200)) = 200 (log σ(−200) underflows in the naive form).
    const { losses } = bradleyTerryLoss({ chosenRewards: tf.tensor1d([-100, 100]), rejectedRewards: tf.tensor1d([100, -100]) });
    const [wrong, right] = losses.dataSync();
    expect(wrong).toBeCloseTo(200, 4);
    expect(right).toBeCloseTo(0, 6);
  });

  it('has gradient −σ(−(r_c − r_r)) w.r.t. the chosen reward', () => {
    // d/dr_c softplus(−(r_c − r_r)) = −σ(−1.5) = −0.1824255
    const rejected = tf.tensor1d([0.5]);
    const g = tf.grad((c: tf.Tensor) => tf.sum(bradleyTerryLoss({ chosenRewards: c as tf.Tensor1D, rejectedRewards: rejected }).losses))(tf.tensor1d([2]));
    expect(scalar(g)).toBeCloseTo(-0.182426, 6);
  });

  it('rejects mismatched shapes and a negative centering coefficient', () => {
    expect(() => bradleyTerryLoss({ chosenRewards: tf.tensor1d([1, 2]), rejectedRewards: tf.tensor1d([1]) })).toThrow(/rejectedRewards shape \[1\]/);
    expect(() => bradleyTerryLoss({ chosenRewards: tf.tensor1d([1]), rejectedRewards: tf.tensor1d([1]) }, { centeringCoefficient: -1 })).toThrow(/centeringCoefficient = -1/);
  });

  it('leaks no tensor', () => {
    const inputs = { chosenRewards: tf.tensor1d([2, 0]), rejectedRewards: tf.tensor1d([0.5, 1]), margins: tf.tensor1d([1, 0]) };
    expectNoLeak(() => bradleyTerryLoss(inputs, { centeringCoefficient: 0.01 }));
    const result = bradleyTerryLoss(inputs);
    const before = tf.memory().numTensors;
    rewardMetrics(result);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('rankingLoss', () => {
  // Row 0: edited > chosen > rejected with rewards (3, 1, −1), all valid. Pairs:
  //   (0,1): softplus(−2) = 0.1269280; (0,2): softplus(−4) = 0.0181499; (1,2): softplus(−2) = 0.1269280
  //   row loss = mean = 0.0906687
  // Row 1: no edited response: (·, 2, 0.5) with mask (0, 1, 1) → one pair, softplus(−1.5) = 0.2014133.
  const rewards = [[3, 1, -1], [123, 2, 0.5]];
  const valid = [[1, 1, 1], [0, 1, 1]];

  it('averages Bradley–Terry over every valid ordered pair of each row', () => {
    const result = rankingLoss(tf.tensor2d(rewards), tf.tensor2d(valid));
    const losses = result.losses.dataSync();
    expect(losses[0]).toBeCloseTo(0.0906687, 6);
    expect(losses[1]).toBeCloseTo(0.201413, 6);
    // 4 valid pairs, all ordered right; margins 2, 4, 2, 1.5 → mean 2.375.
    expect(result.numPairs).toBe(4);
    const metrics = rewardMetrics(result);
    expect(metrics.accuracy).toBeCloseTo(1, 6);
    expect(metrics.margin).toBeCloseTo(2.375, 6);
  });

  it('equals the mean of the three pairwise bradleyTerryLoss values for a 3-response row', () => {
    const pair = (c: number, r: number) => scalar(bradleyTerryLoss({ chosenRewards: tf.tensor1d([c]), rejectedRewards: tf.tensor1d([r]) }, { centeringCoefficient: 0.05 }).losses);
    const expected = (pair(3, 1) + pair(3, -1) + pair(1, -1)) / 3;
    const ours = scalar(rankingLoss(tf.tensor2d([rewards[0]]), tf.tensor2d([valid[0]]), { centeringCoefficient: 0.05 }).losses);
    expect(ours).toBeCloseTo(expected, 6);
  });

  it('sends no gradient to a masked response', () => {
    const g = tf.grad((r: tf.Tensor) => tf.sum(rankingLoss(r as tf.Tensor2D, tf.tensor2d(valid)).losses))(tf.tensor2d(rewards));
    const values = g.arraySync() as number[][];
    expect(values[1][0]).toBe(0);
    // Row 1, chosen: −σ(−1.5) = −0.1824255; rejected: +0.1824255.
    expect(values[1][1]).toBeCloseTo(-0.182426, 6);
    expect(values[1][2]).toBeCloseTo(0.182426, 6);
  });

  it('counts a misordered pair in accuracy', () => {
    // (1, 2, 0): pairs (0,1) wrong, (0,2) right, (1,2) right → accuracy 2/3, margin (−1 + 1 + 2)/3 = 2/3.
    const metrics = rewardMetrics(rankingLoss(tf.tensor2d([[1, 2, 0]]), tf.tensor2d([[1, 1, 1]])));
    expect(metrics.accuracy).toBeCloseTo(2 / 3, 6);
    expect(metrics.margin).toBeCloseTo(2 / 3, 6);
  });

  it('rejects a row with fewer than two valid responses', () => {
    expect(() => rankingLoss(tf.tensor2d(rewards), tf.tensor2d([[1, 1, 1], [0, 0, 1]]))).toThrow(/validMask row 1 has 1 valid responses/);
  });

  it('leaks no tensor', () => {
    const r = tf.tensor2d(rewards);
    const v = tf.tensor2d(valid);
    expectNoLeak(() => rankingLoss(r, v, { centeringCoefficient: 0.01 }));
  });
});

describe('strength margins', () => {
  it('maps strengths to Llama 2 "margin small" values', () => {
    const m = strengthMargins(['significantly_better', 'better', 'slightly_better', 'marginally_better']).dataSync();
    expect(m[0]).toBeCloseTo(1, 6);
    expect(m[1]).toBeCloseTo(2 / 3, 6);
    expect(m[2]).toBeCloseTo(1 / 3, 6);
    expect(m[3]).toBe(0);
    expect(Object.isFrozen(STRENGTH_MARGINS)).toBe(true);
  });

  it('takes another table (Llama 2 "margin large")', () => {
    const large = { significantly_better: 3, better: 2, slightly_better: 1, marginally_better: 0 };
    expect(Array.from(strengthMargins(['better', 'significantly_better'], large).dataSync())).toEqual([2, 3]);
  });

  it('rejects an unknown strength', () => {
    expect(() => strengthMargins(['better', 'much_better' as 'better'])).toThrow(/strengths\[1\] = 'much_better'/);
  });
});
