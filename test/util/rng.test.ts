import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/util/rng.js';

function draw(rng: Rng, n: number): number[] {
  return Array.from({ length: n }, () => rng.next());
}

/** Pearson correlation of two equal-length samples. */
function correlation(a: number[], b: number[]): number {
  const mean = (x: number[]) => x.reduce((s, v) => s + v, 0) / x.length;
  const ma = mean(a);
  const mb = mean(b);
  let cov = 0;
  let va = 0;
  let vb = 0;
  for (let i = 0; i < a.length; i++) {
    cov += (a[i]! - ma) * (b[i]! - mb);
    va += (a[i]! - ma) ** 2;
    vb += (b[i]! - mb) ** 2;
  }
  return cov / Math.sqrt(va * vb);
}

describe('Rng', () => {
  it('implements xoshiro128** (reference vector for state words [1, 2, 3, 4])', () => {
    // The same vector as the rand_xoshiro crate's Xoshiro128StarStar test (and the C reference code).
    const rng = Rng.fromState({ key: 0, words: [1, 2, 3, 4] });
    expect(Array.from({ length: 6 }, () => rng.nextUint32())).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
    expect(rng.state().words).toEqual([1110993931, 286554632, 2431677446, 2165318166]);
  });

  it('gives the same stream for the same seed and different streams for neighbouring seeds', () => {
    expect(draw(new Rng(42), 5)).toEqual(draw(new Rng(42), 5));
    expect(draw(new Rng(42), 5)).not.toEqual(draw(new Rng(43), 5));
    expect(draw(new Rng(2 ** 40), 3)).not.toEqual(draw(new Rng(0), 3)); // the high word of the seed counts
    expect(Math.abs(correlation(draw(new Rng(0), 5000), draw(new Rng(1), 5000)))).toBeLessThan(0.05);
  });

  it('draws uniform floats in [0, 1), unbiased integers and standard normals', () => {
    const rng = new Rng(1);
    const u = draw(rng, 20000);
    expect(Math.min(...u)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...u)).toBeLessThan(1);
    expect(Math.abs(u.reduce((a, b) => a + b, 0) / u.length - 0.5)).toBeLessThan(0.01);
    const counts = new Array<number>(6).fill(0);
    for (let i = 0; i < 60000; i++) counts[rng.nextInt(6)]! += 1;
    for (const c of counts) expect(Math.abs(c - 10000)).toBeLessThan(400); // ~4σ for Binomial(60000, 1/6)
    const z = Array.from({ length: 20000 }, () => rng.normal());
    const mean = z.reduce((a, b) => a + b, 0) / z.length;
    const variance = z.reduce((a, b) => a + (b - mean) ** 2, 0) / z.length;
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(variance - 1)).toBeLessThan(0.05);
    expect(Math.abs(rng.normal(10, 0.001) - 10)).toBeLessThan(0.01);
    expect(() => rng.nextInt(0)).toThrow(/nextInt bound/);
  });

  it('shuffles deterministically into a permutation', () => {
    const a = new Rng(5).shuffle(Array.from({ length: 50 }, (_, i) => i));
    const b = new Rng(5).shuffle(Array.from({ length: 50 }, (_, i) => i));
    expect(a).toEqual(b);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(a).not.toEqual(Array.from({ length: 50 }, (_, i) => i));
    // Every position of a 3-element shuffle takes each value about 1/3 of the time.
    const rng = new Rng(9);
    const firstCounts = [0, 0, 0];
    for (let i = 0; i < 9000; i++) firstCounts[rng.shuffle([0, 1, 2])[0]!]! += 1;
    for (const c of firstCounts) expect(Math.abs(c - 3000)).toBeLessThan(200);
  });

  it('forks by seed and index only, into independent streams', () => {
    const parent = new Rng(123);
    const fork3 = draw(parent.fork(3), 5);
    draw(parent, 100); // consuming the parent does not move its forks
    expect(draw(parent.fork(3), 5)).toEqual(fork3);
    expect(draw(new Rng(123).fork(3), 5)).toEqual(fork3);
    expect(draw(parent.fork(4), 5)).not.toEqual(fork3);
    // Hashed, not seed + i: neighbouring seeds' forks do not collide.
    expect(draw(new Rng(123).fork(1), 5)).not.toEqual(draw(new Rng(124).fork(0), 5));
    expect(draw(new Rng(123).fork(0), 5)).not.toEqual(draw(new Rng(123), 5));
    expect(Math.abs(correlation(draw(parent.fork(0), 5000), draw(parent.fork(1), 5000)))).toBeLessThan(0.05);
    expect(Math.abs(correlation(draw(parent.fork(0), 5000), draw(new Rng(123), 5000)))).toBeLessThan(0.05);
    // Forks of forks are deterministic too.
    expect(draw(new Rng(1).fork(2).fork(3), 3)).toEqual(draw(new Rng(1).fork(2).fork(3), 3));
    expect(() => parent.fork(-1)).toThrow(/fork index/);
  });

  it('resumes exactly from state(), including through JSON', () => {
    const rng = new Rng(77);
    draw(rng, 13);
    const saved = JSON.parse(JSON.stringify(rng.state()));
    const expected = draw(rng, 10);
    const resumed = Rng.fromState(saved);
    expect(draw(resumed, 10)).toEqual(expected);
    expect(draw(resumed.fork(2), 4)).toEqual(draw(rng.fork(2), 4)); // the key travels with the state
    expect(() => Rng.fromState({ key: 1, words: [0, 0, 0, 0] })).toThrow(/must not be all zero/);
    expect(() => Rng.fromState({ key: -1, words: [1, 2, 3, 4] })).toThrow(/'key'/);
  });
});
