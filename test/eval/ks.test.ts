import { describe, expect, it } from 'vitest';
import { ksPValue, ksStatistic } from '../../src/eval/statistics.js';

describe('Kolmogorov–Smirnov', () => {
  it('computes D by hand', () => {
    // a = {1, 2, 3, 4}, b = {3, 4, 5, 6}: after x = 2, F_a = 2/4 and F_b = 0 → D = 0.5
    expect(ksStatistic([1, 2, 3, 4], [3, 4, 5, 6])).toBe(0.5);
    expect(ksStatistic([1, 2], [3, 4])).toBe(1);
    expect(ksStatistic([5, 1, 3], [3, 1, 5])).toBe(0);
    // ties across samples step together: a = {1, 1, 2}, b = {1, 2, 2}: at x = 1, 2/3 vs 1/3
    expect(ksStatistic([1, 1, 2], [1, 2, 2])).toBeCloseTo(1 / 3, 12);
    expect(ksStatistic([], [1])).toBeNaN();
  });

  it('p-values match the Kolmogorov distribution (scipy.stats.kstwobign.sf)', () => {
    // Q(λ) for λ = 1.36 is 0.0494 (the 5% critical value is λ = 1.358); with n = m = 1e6 the
    // correction vanishes and λ = √(n/2)·d.
    const n = 1e6;
    const d = 1.36 / Math.sqrt(n / 2);
    expect(ksPValue(d, n, n)).toBeCloseTo(0.0494, 3);
    expect(ksPValue(1.0 / Math.sqrt(n / 2), n, n)).toBeCloseTo(0.27, 2); // Q(1) = 0.2700
    expect(ksPValue(0, 10, 10)).toBe(1);
    expect(ksPValue(1, 50, 50)).toBeLessThan(1e-10);
  });
});
