import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { DPO_LOSSES, dpoHingeLoss, dpoIpoLoss, dpoIpoSumLoss, dpoMetrics, dpoSigmoidLoss } from '../../losses/dpo.js';
import type { PreferenceLogps } from '../../losses/dpo.js';
import { expectNoLeak } from './tensor-count.js';

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
});

const LN2 = Math.log(2);

/** Policy equal to the reference: h = 0 in every row. */
function samePolicyAndReference(): PreferenceLogps {
  const chosen = [-12.5, -3, -40];
  const rejected = [-20, -2.25, -41];
  return {
    policyChosenLogps: tf.tensor1d(chosen),
    policyRejectedLogps: tf.tensor1d(rejected),
    refChosenLogps: tf.tensor1d(chosen),
    refRejectedLogps: tf.tensor1d(rejected),
    chosenNumTokens: tf.tensor1d([5, 1, 16]),
    rejectedNumTokens: tf.tensor1d([8, 2, 16]),
  };
}

/**
 * Row 0: chosen log-ratio −10 − (−12) = 2, rejected −15 − (−14) = −1 → h = 3.
 * Row 1: chosen 0 − (−10) = 10, rejected −10 − 0 = −10 → h = 20.
 * Response lengths (for the length-normalised ipo): chosen (2, 4) tokens, rejected (1, 5).
 */
function handPicked(): PreferenceLogps {
  return {
    policyChosenLogps: tf.tensor1d([-10, 0]),
    policyRejectedLogps: tf.tensor1d([-15, -10]),
    refChosenLogps: tf.tensor1d([-12, -10]),
    refRejectedLogps: tf.tensor1d([-14, 0]),
    chosenNumTokens: tf.tensor1d([2, 4]),
    rejectedNumTokens: tf.tensor1d([1, 5]),
  };
}

describe('DPO losses when the policy equals the reference (h = 0)', () => {
  it('sigmoid is ln 2 with and without label smoothing', () => {
    for (const labelSmoothing of [0, 0.1, 0.3]) {
      const losses = dpoSigmoidLoss(samePolicyAndReference(), { beta: 0.1, labelSmoothing }).losses.dataSync();
      for (const l of losses) expect(l).toBeCloseTo(LN2, 6);
    }
  });

  it('ipo and ipo_sum are (1/(2β))² = 25 at β = 0.1; hinge is 1', () => {
    for (const l of dpoIpoLoss(samePolicyAndReference(), { beta: 0.1 }).losses.dataSync()) expect(l).toBeCloseTo(25, 4);
    for (const l of dpoIpoSumLoss(samePolicyAndReference(), { beta: 0.1 }).losses.dataSync()) expect(l).toBeCloseTo(25, 4);
    for (const l of dpoHingeLoss(samePolicyAndReference(), { beta: 0.1 }).losses.dataSync()) expect(l).toBeCloseTo(1, 6);
  });

  it('has zero implicit rewards', () => {
    const { chosenRewards, rejectedRewards } = dpoSigmoidLoss(samePolicyAndReference(), { beta: 0.1 });
    expect(Array.from(chosenRewards.dataSync())).toEqual([0, 0, 0]);
    expect(Array.from(rejectedRewards.dataSync())).toEqual([0, 0, 0]);
  });
});

describe('DPO losses on hand-picked numbers (β = 0.1)', () => {
  it('sigmoid: softplus(−βh)', () => {
    // Row 0: βh = 0.3 → ln(1 + e^−0.3) = ln(1.7408182) = 0.5543552
    // Row 1: βh = 2 → ln(1 + e^−2) = 0.1269280
    const [a, b] = dpoSigmoidLoss(handPicked(), { beta: 0.1 }).losses.dataSync();
    expect(a).toBeCloseTo(0.554355, 6);
    expect(b).toBeCloseTo(0.126928, 6);
  });

  it('sigmoid with label smoothing ε = 0.1: (1 − ε)·softplus(−βh) + ε·softplus(βh)', () => {
    // Row 0: softplus(0.3) = 0.3 + softplus(−0.3) = 0.8543552 → 0.9·0.5543552 + 0.1·0.8543552 = 0.5843552
    // Row 1: softplus(2) = 2.1269280 → 0.9·0.1269280 + 0.1·2.1269280 = 0.3269280
    const [a, b] = dpoSigmoidLoss(handPicked(), { beta: 0.1, labelSmoothing: 0.1 }).losses.dataSync();
    expect(a).toBeCloseTo(0.584355, 6);
    expect(b).toBeCloseTo(0.326928, 6);
  });

  it('ipo_sum: (h − 1/(2β))², on summed log-probs (eq. 17 as written)', () => {
    // Row 0: (3 − 5)² = 4; row 1: (20 − 5)² = 225
    const [a, b] = dpoIpoSumLoss(handPicked(), { beta: 0.1 }).losses.dataSync();
    expect(a).toBeCloseTo(4, 5);
    expect(b).toBeCloseTo(225, 4);
  });

  it('ipo (TRL): (h̄ − 1/(2β))² with every log-prob divided by its response length', () => {
    // Row 0: chosen ratio 2 / 2 = 1, rejected −1 / 1 = −1 → h̄ = 2 → (2 − 5)² = 9
    // Row 1: chosen 10 / 4 = 2.5, rejected −10 / 5 = −2 → h̄ = 4.5 → (4.5 − 5)² = 0.25
    const { losses, chosenRewards, rejectedRewards } = dpoIpoLoss(handPicked(), { beta: 0.1 });
    const [a, b] = losses.dataSync();
    expect(a).toBeCloseTo(9, 5);
    expect(b).toBeCloseTo(0.25, 5);
    // rewards are β × the normalised log-ratios, as TRL logs them: chosen (0.1, 0.25), rejected (−0.1, −0.2)
    expect(Array.from(chosenRewards.dataSync()).map((v) => +v.toFixed(6))).toEqual([0.1, 0.25]);
    expect(Array.from(rejectedRewards.dataSync()).map((v) => +v.toFixed(6))).toEqual([-0.1, -0.2]);
  });

  it('ipo gradient w.r.t. the policy chosen log-prob is 2(h̄ − 1/(2β)) / |y_w|', () => {
    // Row 0: 2·(2 − 5)/2 = −3; row 1: 2·(4.5 − 5)/4 = −0.25
    const inputs = handPicked();
    const g = tf.grad((c: tf.Tensor) => tf.sum(dpoIpoLoss({ ...inputs, policyChosenLogps: c as tf.Tensor1D }, { beta: 0.1 }).losses))(inputs.policyChosenLogps);
    const [g0, g1] = g.dataSync();
    expect(g0).toBeCloseTo(-3, 5);
    expect(g1).toBeCloseTo(-0.25, 5);
  });

  it('ipo counts a response with no tokens as one (its sum is 0), never dividing by zero', () => {
    // Row 0 with |y_w| = 0: chosen ratio 2 / 1 = 2, rejected −1 / 1 = −1 → h̄ = 3 → (3 − 5)² = 4
    const inputs = { ...handPicked(), chosenNumTokens: tf.tensor1d([0, 4]) };
    expect(dpoIpoLoss(inputs, { beta: 0.1 }).losses.dataSync()[0]).toBeCloseTo(4, 5);
  });

  it('hinge: relu(1 − βh)', () => {
    // Row 0: 1 − 0.3 = 0.7; row 1: 1 − 2 = −1 → 0
    const [a, b] = dpoHingeLoss(handPicked(), { beta: 0.1 }).losses.dataSync();
    expect(a).toBeCloseTo(0.7, 6);
    expect(b).toBe(0);
  });

  it('implicit rewards are β × the log-ratios (summed: every loss but ipo)', () => {
    // chosen: 0.1·(2, 10) = (0.2, 1); rejected: 0.1·(−1, −10) = (−0.1, −1)
    for (const loss of Object.values(DPO_LOSSES).filter((l) => l.name !== 'ipo')) {
      const { chosenRewards, rejectedRewards } = loss.compute(handPicked(), { beta: 0.1 });
      const c = chosenRewards.dataSync();
      const r = rejectedRewards.dataSync();
      expect(c[0]).toBeCloseTo(0.2, 6);
      expect(c[1]).toBeCloseTo(1, 6);
      expect(r[0]).toBeCloseTo(-0.1, 6);
      expect(r[1]).toBeCloseTo(-1, 6);
    }
  });

  it('sigmoid gradient w.r.t. the policy chosen log-prob is −β·σ(−βh)', () => {
    // Row 0: −0.1·σ(−0.3) = −0.1·0.4255575 = −0.0425557
    const inputs = handPicked();
    const g = tf.grad((c: tf.Tensor) => tf.sum(dpoSigmoidLoss({ ...inputs, policyChosenLogps: c as tf.Tensor1D }, { beta: 0.1 }).losses))(inputs.policyChosenLogps);
    expect(g.dataSync()[0]).toBeCloseTo(-0.0425557, 6);
  });
});

describe('DPO_LOSSES registry', () => {
  it('names each variant after TRL and marks it as needing a reference', () => {
    expect(Object.keys(DPO_LOSSES).sort()).toEqual(['hinge', 'ipo', 'ipo_sum', 'sigmoid']);
    for (const [key, loss] of Object.entries(DPO_LOSSES)) {
      expect(loss.name).toBe(key);
      expect(loss.needsReference).toBe(true);
    }
    expect(DPO_LOSSES.ipo.compute).toBe(dpoIpoLoss);
    expect(DPO_LOSSES.ipo_sum.compute).toBe(dpoIpoSumLoss);
  });
});

describe('dpoMetrics', () => {
  it('reports TRL names as batch means', () => {
    // rewards chosen (0.2, 1) → 0.6; rejected (−0.1, −1) → −0.55; accuracies 1; margins (0.3, 2) → 1.15;
    // logps/chosen mean(−10, 0) = −5; logps/rejected mean(−15, −10) = −12.5
    const inputs = handPicked();
    const result = dpoSigmoidLoss(inputs, { beta: 0.1 });
    const before = tf.memory().numTensors;
    const metrics = dpoMetrics(inputs, result, tf.scalar(1.25));
    expect(tf.memory().numTensors).toBe(before + 1); // only the scalar made in the call's arguments
    expect(metrics['rewards/chosen']).toBeCloseTo(0.6, 6);
    expect(metrics['rewards/rejected']).toBeCloseTo(-0.55, 6);
    expect(metrics['rewards/accuracies']).toBe(1);
    expect(metrics['rewards/margins']).toBeCloseTo(1.15, 6);
    expect(metrics['logps/chosen']).toBeCloseTo(-5, 6);
    expect(metrics['logps/rejected']).toBeCloseTo(-12.5, 6);
    expect(metrics.nll_loss).toBeCloseTo(1.25, 6);
    expect('nll_loss' in dpoMetrics(inputs, result)).toBe(false);
  });

  it('counts ties as wrong in accuracies', () => {
    const inputs = samePolicyAndReference();
    expect(dpoMetrics(inputs, dpoSigmoidLoss(inputs, { beta: 0.1 }))['rewards/accuracies']).toBe(0);
  });
});

describe('input checks', () => {
  it('rejects a bad β, label smoothing out of range or on ipo/hinge, and mismatched shapes', () => {
    expect(() => dpoSigmoidLoss(handPicked(), { beta: 0 })).toThrow(/beta = 0/);
    expect(() => dpoSigmoidLoss(handPicked(), { beta: 0.1, labelSmoothing: 0.5 })).toThrow(/labelSmoothing = 0.5/);
    expect(() => dpoIpoLoss(handPicked(), { beta: 0.1, labelSmoothing: 0.1 })).toThrow(/sigmoid loss only, not ipo$/);
    expect(() => dpoIpoSumLoss(handPicked(), { beta: 0.1, labelSmoothing: 0.1 })).toThrow(/sigmoid loss only, not ipo_sum$/);
    const { chosenNumTokens: _dropped, ...withoutLengths } = handPicked();
    expect(() => dpoIpoLoss(withoutLengths, { beta: 0.1 })).toThrow(/ipo loss needs chosenNumTokens and rejectedNumTokens/);
    expect(() => dpoHingeLoss(handPicked(), { beta: 0.1, labelSmoothing: 0.1 })).toThrow(/not hinge/);
    expect(() => dpoSigmoidLoss({ ...handPicked(), refRejectedLogps: tf.tensor1d([1, 2, 3]) }, { beta: 0.1 })).toThrow(/refRejectedLogps shape \[3\]/);
  });
});

describe('leaks', () => {
  it('no variant leaks a tensor', () => {
    const inputs = handPicked();
    expectNoLeak(() => dpoSigmoidLoss(inputs, { beta: 0.1, labelSmoothing: 0.1 }));
    expectNoLeak(() => dpoSigmoidLoss(inputs, { beta: 0.1 }));
    expectNoLeak(() => dpoIpoLoss(inputs, { beta: 0.1 }));
    expectNoLeak(() => dpoIpoSumLoss(inputs, { beta: 0.1 }));
    expectNoLeak(() => dpoHingeLoss(inputs, { beta: 0.1 }));
  });
});
