import { describe, expect, it } from 'vitest';
import { averageRanks, bootstrapMeanInterval, spearman, standardDeviation, wilsonInterval } from '../../src/eval/statistics.js';
import { selectionQuality } from '../../src/eval/selection-quality.js';
import { preferenceAccuracy } from '../../src/eval/preference-accuracy.js';

describe('wilsonInterval', () => {
  it('8 of 10: [0.4902, 0.9433] (worked by hand: centre 0.99207, spread 0.31362, denominator 1.38415)', () => {
    const w = wilsonInterval(8, 10);
    expect(w.estimate).toBe(0.8);
    expect(w.low).toBeCloseTo(0.49016, 4);
    expect(w.high).toBeCloseTo(0.94331, 4);
  });
  it('stays inside [0, 1] at 0 and n successes, and is NaN without trials', () => {
    expect(wilsonInterval(0, 20).low).toBe(0);
    expect(wilsonInterval(0, 20).high).toBeCloseTo(0.16113, 4);
    expect(wilsonInterval(20, 20).high).toBe(1);
    expect(Number.isNaN(wilsonInterval(0, 0).estimate)).toBe(true);
    expect(() => wilsonInterval(3, 2)).toThrow(/3 successes of 2/);
  });
});

describe('bootstrapMeanInterval', () => {
  it('is the constant for constant values, and ≈ mean ± 1.96·se for 0/1 values', () => {
    const c = bootstrapMeanInterval([0.3, 0.3, 0.3]);
    expect(c.low).toBeCloseTo(0.3, 12);
    expect(c.high).toBeCloseTo(0.3, 12);
    const coin = Array.from({ length: 400 }, (_, i) => i % 2); // mean 0.5, se 0.025
    const b = bootstrapMeanInterval(coin, { seed: 3 });
    expect(b.estimate).toBe(0.5);
    expect(b.low).toBeGreaterThan(0.44);
    expect(b.low).toBeLessThan(0.46);
    expect(b.high).toBeGreaterThan(0.54);
    expect(b.high).toBeLessThan(0.56);
    expect(bootstrapMeanInterval(coin, { seed: 3 })).toEqual(b); // seeded
  });
});

describe('spearman', () => {
  it('1 − 6Σd²/(n(n²−1)) without ties: [1,2,3,4] vs [1,3,2,4] → 0.8', () => {
    expect(spearman([1, 2, 3, 4], [1, 3, 2, 4])).toBeCloseTo(0.8, 12);
    expect(spearman([1, 2, 3], [30, 20, 10])).toBeCloseTo(-1, 12);
  });
  it('ties share the mean rank; a constant side has no correlation', () => {
    expect(averageRanks([10, 20, 20, 30])).toEqual([1, 2.5, 2.5, 4]);
    expect(Number.isNaN(spearman([1, 1, 1], [1, 2, 3]))).toBe(true);
    expect(standardDeviation([1, 2, 3, 4])).toBeCloseTo(Math.sqrt(5 / 3), 12);
  });
});

describe('selectionQuality', () => {
  it('RM gain, judge gain and within-prompt Spearman worked by hand; flags reward hacking', () => {
    const q = selectionQuality({
      rewards: [[0.1, 0.9, 0.5], [1, 0]],
      judgeScores: [[0.2, 0.8, 0.5], [0, 1]],
      selected: [1, 0],
    });
    // prompt 1: rm 0.9 − 0.5 = 0.4, judge 0.8 − 0.5 = 0.3, ρ = 1; prompt 2: rm 1 − 0.5, judge 0 − 0.5, ρ = −1
    expect(q.rmGain).toBeCloseTo(0.45, 12);
    expect(q.judgeGain.estimate).toBeCloseTo(-0.1, 12);
    expect(q.judgeMean).toBeCloseTo(0.5, 12);
    expect(q.judgeBest).toBeCloseTo(0.4, 12);
    expect(q.spearman).toBeCloseTo(0, 12);
    expect(q.numRankedPrompts).toBe(2);
    expect(q.rewardHacking).toBe(true);
    const good = selectionQuality({ rewards: [[0.1, 0.9, 0.5]], judgeScores: [[0.2, 0.8, 0.5]], selected: [1] });
    expect(good.rewardHacking).toBe(false);
  });
});

describe('preferenceAccuracy', () => {
  it('overall and per strength with Wilson intervals; a tie is not correct', () => {
    const r = preferenceAccuracy([
      { strength: 'better', chosenReward: 1, rejectedReward: 0 },
      { strength: 'better', chosenReward: 0, rejectedReward: 1 },
      { strength: 'slightly_better', chosenReward: 2, rejectedReward: 1 },
      { strength: 'slightly_better', chosenReward: 1, rejectedReward: 1 },
    ]);
    expect(r.accuracy.estimate).toBe(0.5);
    expect(r.margin).toBeCloseTo(0.25, 12);
    expect(r.byStrength.better).toEqual({ numPairs: 2, accuracy: wilsonInterval(1, 2) });
    expect(r.byStrength.slightly_better!.accuracy.estimate).toBe(0.5);
    expect(r.byStrength.significantly_better).toBeUndefined();
    expect(() => preferenceAccuracy([{ strength: 'better', chosenReward: NaN, rejectedReward: 0 }])).toThrow(/not finite/);
  });
});
