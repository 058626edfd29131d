import { describe, expect, it } from 'vitest';
import { learningRateAt, type LrScheduleOptions } from '../../src/train/schedule.js';

describe('learningRateAt', () => {
  // Peak 1, warmup 4, decay over steps 4..12 to a floor of 0.1 (minLrRatio 0.1).
  const base = { lr: 1, warmupSteps: 4, totalSteps: 12, minLrRatio: 0.1 };

  it('warms up linearly as lr·(step + 1)/warmupSteps', () => {
    const opts: LrScheduleOptions = { ...base, decay: 'cosine' };
    expect(learningRateAt(0, opts)).toBeCloseTo(0.25, 12);
    expect(learningRateAt(1, opts)).toBeCloseTo(0.5, 12);
    expect(learningRateAt(3, opts)).toBeCloseTo(1, 12);
  });

  it('decays along a cosine to the floor at totalSteps', () => {
    const opts: LrScheduleOptions = { ...base, decay: 'cosine' };
    // step 4: progress 0 → peak
    expect(learningRateAt(4, opts)).toBeCloseTo(1, 12);
    // step 6: progress (6−4)/8 = 0.25, coeff ½(1 + cos(π/4)) = 0.8535534, lr = 0.1 + 0.9·0.8535534 = 0.8681981
    expect(learningRateAt(6, opts)).toBeCloseTo(0.8681981, 6);
    // step 8: progress 0.5, coeff 0.5, lr = 0.1 + 0.45 = 0.55
    expect(learningRateAt(8, opts)).toBeCloseTo(0.55, 12);
    // at and past totalSteps: the floor
    expect(learningRateAt(12, opts)).toBeCloseTo(0.1, 12);
    expect(learningRateAt(1000, opts)).toBeCloseTo(0.1, 12);
  });

  it('decays linearly to the floor', () => {
    const opts: LrScheduleOptions = { ...base, decay: 'linear' };
    // step 6: progress 0.25 → 0.1 + 0.9·0.75 = 0.775;  step 10: progress 0.75 → 0.1 + 0.9·0.25 = 0.325
    expect(learningRateAt(6, opts)).toBeCloseTo(0.775, 12);
    expect(learningRateAt(10, opts)).toBeCloseTo(0.325, 12);
    expect(learningRateAt(11, opts)).toBeCloseTo(0.2125, 12); // progress 7/8: 0.1 + 0.9/8
    expect(learningRateAt(12, opts)).toBeCloseTo(0.1, 12);
  });

  it('holds the peak after warmup when constant', () => {
    const opts: LrScheduleOptions = { ...base, decay: 'constant' };
    expect(learningRateAt(0, opts)).toBeCloseTo(0.25, 12);
    expect(learningRateAt(4, opts)).toBeCloseTo(1, 12);
    expect(learningRateAt(500, opts)).toBe(1);
  });

  it('decays to zero by default and starts at the peak without warmup', () => {
    const opts: LrScheduleOptions = { lr: 3e-4, warmupSteps: 0, totalSteps: 10, decay: 'cosine' };
    expect(learningRateAt(0, opts)).toBeCloseTo(3e-4, 15);
    expect(learningRateAt(5, opts)).toBeCloseTo(1.5e-4, 15); // ½(1 + cos(π/2)) = ½
    expect(learningRateAt(10, opts)).toBe(0);
  });

  it('rejects bad input naming the field', () => {
    expect(() => learningRateAt(-1, { ...base, decay: 'cosine' })).toThrow(/step must be a non-negative integer/);
    expect(() => learningRateAt(0, { ...base, totalSteps: 2, decay: 'cosine' })).toThrow(/'totalSteps' \(2\) must be ≥ 'warmupSteps' \(4\)/);
    expect(() => learningRateAt(0, { ...base, minLrRatio: 1.5, decay: 'linear' })).toThrow(/'minLrRatio'/);
    expect(() => learningRateAt(0, { ...base, decay: 'step' as 'linear' })).toThrow(/'decay'/);
  });
});
