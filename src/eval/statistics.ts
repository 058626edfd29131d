/**
 * The statistics a reviewer needs to judge an alignment run: 95% intervals for rates and means,
 * and rank correlation between two scorers. Pure functions over numbers; no tensors.
 *
 * - `wilsonInterval`: Wilson score interval of a binomial proportion (Wilson 1927). Used for
 *   accuracies (k correct of n pairs). Unlike the normal interval it stays inside [0, 1] and is
 *   honest at small n and at rates near 0 or 1.
 * - `bootstrapMeanInterval`: percentile bootstrap (Efron 1979) of the mean of per-unit values,
 *   resampling units (held-out prompts) with replacement, seeded. Used for judge scores, win
 *   rates with ties counted half, and selection gains, whose per-prompt values are not 0/1.
 * - `spearman`: Spearman's ρ, the Pearson correlation of average ranks (ties get the mean of
 *   the ranks they span).
 */
import { Rng } from '../util/rng.js';

/** A 95% interval around an estimate. */
export interface Interval {
  estimate: number;
  low: number;
  high: number;
}

/** An estimate and its interval as metrics: `name`, `name_ci_low`, `name_ci_high`. */
export function intervalMetrics(name: string, x: Interval): Record<string, number> {
  return { [name]: x.estimate, [`${name}_ci_low`]: x.low, [`${name}_ci_high`]: x.high };
}

/** z for a two-sided 95% interval. */
const Z95 = 1.959963984540054;

/**
 * Wilson score interval for `numSuccesses` of `numTrials`:
 *   (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n).
 * NaN estimate and bounds when `numTrials` is 0.
 */
export function wilsonInterval(numSuccesses: number, numTrials: number, z = Z95): Interval {
  if (numTrials === 0) return { estimate: NaN, low: NaN, high: NaN };
  if (numSuccesses < 0 || numSuccesses > numTrials) throw new Error(`wilsonInterval: ${numSuccesses} successes of ${numTrials} trials`);
  const p = numSuccesses / numTrials;
  const z2 = z * z;
  const centre = p + z2 / (2 * numTrials);
  const spread = z * Math.sqrt((p * (1 - p)) / numTrials + z2 / (4 * numTrials * numTrials));
  const denom = 1 + z2 / numTrials;
  return { estimate: p, low: Math.max(0, (centre - spread) / denom), high: Math.min(1, (centre + spread) / denom) };
}

export interface BootstrapOptions {
  /** Resamples (default 2,000: the 2.5% and 97.5% quantiles move by < 0.1 sd of the mean between seeds). */
  numResamples?: number;
  /** Seed of the resampling stream (default 0): the same values give the same interval. */
  seed?: number;
}

/** Mean of `values`; NaN when empty. */
export function mean(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

/** Sample standard deviation (n − 1); NaN below two values. */
export function standardDeviation(values: readonly number[]): number {
  if (values.length < 2) return NaN;
  const m = mean(values);
  let sum = 0;
  for (const v of values) sum += (v - m) * (v - m);
  return Math.sqrt(sum / (values.length - 1));
}

/** Linear-interpolated quantile q ∈ [0, 1] of sorted values. */
function quantileSorted(sorted: readonly number[], q: number): number {
  const at = q * (sorted.length - 1);
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (at - lo);
}

/**
 * Percentile-bootstrap 95% interval of the mean of `values` (one value per independent unit,
 * e.g. a held-out prompt's mean judge score over its samples).
 */
export function bootstrapMeanInterval(values: readonly number[], opts: BootstrapOptions = {}): Interval {
  const n = values.length;
  if (n === 0) return { estimate: NaN, low: NaN, high: NaN };
  const numResamples = opts.numResamples ?? 2000;
  const rng = new Rng(opts.seed ?? 0);
  const means = new Float64Array(numResamples);
  for (let b = 0; b < numResamples; b++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += values[rng.nextInt(n)]!;
    means[b] = sum / n;
  }
  const sorted = Array.from(means).sort((a, b) => a - b);
  return { estimate: mean(values), low: quantileSorted(sorted, 0.025), high: quantileSorted(sorted, 0.975) };
}

/** Average ranks (1-based) of `values`; ties share the mean of the ranks they span. */
export function averageRanks(values: readonly number[]): number[] {
  const order = values.map((v, i) => ({ v, i })).sort((a, b) => a.v - b.v);
  const ranks = new Array<number>(values.length);
  let start = 0;
  while (start < order.length) {
    let end = start;
    while (end + 1 < order.length && order[end + 1]!.v === order[start]!.v) end++;
    const rank = (start + end) / 2 + 1;
    for (let k = start; k <= end; k++) ranks[order[k]!.i] = rank;
    start = end + 1;
  }
  return ranks;
}

/** Pearson correlation; NaN when either side is constant or there are fewer than two values. */
export function pearson(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) throw new Error(`pearson: ${a.length} values vs ${b.length}`);
  if (a.length < 2) return NaN;
  const ma = mean(a);
  const mb = mean(b);
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < a.length; i++) {
    sab += (a[i]! - ma) * (b[i]! - mb);
    saa += (a[i]! - ma) ** 2;
    sbb += (b[i]! - mb) ** 2;
  }
  return saa === 0 || sbb === 0 ? NaN : sab / Math.sqrt(saa * sbb);
}

/** Spearman's ρ: Pearson over average ranks. NaN when either side is constant. */
export function spearman(a: readonly number[], b: readonly number[]): number {
  return pearson(averageRanks(a), averageRanks(b));
}

/**
 * Two-sample Kolmogorov–Smirnov statistic D = sup_x |F_a(x) − F_b(x)| of the empirical
 * distribution functions (Smirnov 1939): 0 for identical samples, 1 for samples that do not
 * overlap. Ties across the samples are stepped over together, as `scipy.stats.ks_2samp` does.
 */
export function ksStatistic(a: readonly number[], b: readonly number[]): number {
  if (a.length === 0 || b.length === 0) return NaN;
  const sa = [...a].sort((x, y) => x - y);
  const sb = [...b].sort((x, y) => x - y);
  let i = 0;
  let j = 0;
  let d = 0;
  while (i < sa.length && j < sb.length) {
    const x = Math.min(sa[i]!, sb[j]!);
    while (i < sa.length && sa[i] === x) i++;
    while (j < sb.length && sb[j] === x) j++;
    d = Math.max(d, Math.abs(i / sa.length - j / sb.length));
  }
  return d;
}

/**
 * Asymptotic p-value of a two-sample KS statistic `d` for sample sizes n and m: the Kolmogorov
 * distribution's tail Q(λ) = 2 Σ_{k≥1} (−1)^{k−1} e^{−2k²λ²} at λ = (√N + 0.12 + 0.11/√N)·d,
 * N = nm/(n+m) (Stephens' small-sample correction, as in Numerical Recipes' `probks`).
 */
export function ksPValue(d: number, n: number, m: number): number {
  if (!(n > 0 && m > 0) || Number.isNaN(d)) return NaN;
  const en = Math.sqrt((n * m) / (n + m));
  const lambda = (en + 0.12 + 0.11 / en) * d;
  if (lambda < 1e-3) return 1;
  let sum = 0;
  let sign = 1;
  for (let k = 1; k <= 100; k++) {
    const term = sign * Math.exp(-2 * k * k * lambda * lambda);
    sum += term;
    if (Math.abs(term) < 1e-12 * Math.abs(sum)) break;
    sign = -sign;
  }
  return Math.min(1, Math.max(0, 2 * sum));
}
