import { describe, expect, it } from 'vitest';
import { exactKey, findDuplicates, visitOrder } from '../../../data/curation/dedup.js';
import { MinHasher, candidateProbability, estimatedJaccard, jaccard, lshParameters, shingleHashes } from '../../../data/curation/minhash.js';
import { normalizeText } from '../../../data/curation/text.js';
import { dedupText, type CurationRow } from '../../../data/curation/row-text.js';

/** n distinct words: `${prefix}0 … ${prefix}(n−1)`. */
const words = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

// A: 40 distinct words → 38 word 3-shingles.
const A = words('w', 40);
// B: A with its last two words changed. Exactly the two shingles that contain w38 or w39 differ:
// |A ∩ B| = 36, |A ∪ B| = 38 + 2 = 40, J = 36/40 = 0.9.
const B = [...A.slice(0, 38), 'x38', 'x39'];
// C: the first 20 words of A, then 20 new ones. Shared shingles: those inside w0…w19, 18 of them;
// J = 18 / (38 + 38 − 18) = 18/58 ≈ 0.310.
const C = [...A.slice(0, 20), ...words('c', 20)];
// A with different case, punctuation and spacing: the same normalized text.
const A_NOISY = `${A.slice(0, 20).join(' ').toUpperCase()},   ${A.slice(20).join('  ')}!`;
const D = words('d', 40);

describe('normalized text and exact keys', () => {
  it('lowercases, strips punctuation and collapses whitespace', () => {
    expect(normalizeText('  Hello,  World!\n“Don’t” — stop… ')).toBe('hello world dont stop');
    expect(normalizeText('2 + 2 = 4')).toBe('2 + 2 = 4');
    expect(exactKey('Hello, world!')).toBe(exactKey('hello   WORLD'));
    expect(exactKey('hello world')).not.toBe(exactKey('hello word'));
  });
});

describe('MinHash and LSH', () => {
  it('shingles and Jaccard match the hand-computed sets', () => {
    const a = shingleHashes(A.join(' '), 3);
    expect(a.length).toBe(38);
    expect(jaccard(a, shingleHashes(B.join(' '), 3))).toBeCloseTo(36 / 40, 12);
    expect(jaccard(a, shingleHashes(C.join(' '), 3))).toBeCloseTo(18 / 58, 12);
    expect(shingleHashes('two words', 3).length).toBe(1); // shorter than k: one shingle
    expect(shingleHashes(' ,. ', 3).length).toBe(0);
    expect(jaccard(new Uint32Array(0), new Uint32Array(0))).toBe(1);
  });

  it('estimates Jaccard within a few standard errors and is reproducible for a seed', () => {
    const hasher = new MinHasher(256, 7);
    const sa = hasher.signature(shingleHashes(A.join(' '), 3));
    const sb = hasher.signature(shingleHashes(B.join(' '), 3));
    const sc = hasher.signature(shingleHashes(C.join(' '), 3));
    // standard error √(J(1−J)/n): 0.019 at J = 0.9, 0.029 at J = 0.31; allow 4 of them
    expect(Math.abs(estimatedJaccard(sa, sb) - 0.9)).toBeLessThan(4 * 0.019);
    expect(Math.abs(estimatedJaccard(sa, sc) - 18 / 58)).toBeLessThan(4 * 0.029);
    expect(new MinHasher(256, 7).signature(shingleHashes(A.join(' '), 3))).toEqual(sa);
    expect(new MinHasher(256, 8).signature(shingleHashes(A.join(' '), 3))).not.toEqual(sa);
  });

  it('chooses bands × rows that catch pairs at the threshold with the asked recall', () => {
    const params = lshParameters(0.8, 128);
    expect(params).toEqual({ numBands: 13, rowsPerBand: 7 });
    // 1 − (1 − 0.8⁷)¹³: 0.8⁷ = 0.2097152, (0.7902848)¹³ = 0.046916…
    expect(candidateProbability(0.8, params)).toBeCloseTo(1 - Math.pow(1 - 0.2097152, 13), 12);
    expect(candidateProbability(0.8, params)).toBeGreaterThanOrEqual(0.95);
    expect(candidateProbability(0.3, params)).toBeLessThan(0.005);
    // a stricter recall needs a gentler curve: fewer rows per band
    const strict = lshParameters(0.8, 128, 0.99);
    expect(candidateProbability(0.8, strict)).toBeGreaterThanOrEqual(0.99);
    expect(strict.rowsPerBand).toBeLessThan(params.rowsPerBand);
  });
});

describe('findDuplicates', () => {
  const texts = [A.join(' '), B.join(' '), C.join(' '), A_NOISY, D.join(' ')];

  it('removes exact duplicates only, by default', () => {
    const result = findDuplicates(texts);
    expect(result.keptIndices).toEqual([0, 1, 2, 4]);
    expect(result.duplicates).toEqual([{ index: 3, duplicateOf: 0, kind: 'exact', similarity: 1 }]);
    expect(result.lsh).toBeUndefined();
  });

  it('removes the near duplicate at J = 0.9 and keeps the pair at J ≈ 0.31', () => {
    for (const verify of ['jaccard', 'estimate'] as const) {
      const result = findDuplicates(texts, { near: true, verify });
      expect(result.keptIndices).toEqual([0, 2, 4]);
      expect(result.duplicates.map((d) => [d.index, d.duplicateOf, d.kind])).toEqual([
        [1, 0, 'near'],
        [3, 0, 'exact'],
      ]);
      if (verify === 'jaccard') expect(result.duplicates[0]!.similarity).toBeCloseTo(0.9, 12);
      expect(result.numExact).toBe(1);
      expect(result.numNear).toBe(1);
    }
    // above the pair's similarity, the near duplicate stays
    expect(findDuplicates(texts, { near: true, threshold: 0.95 }).keptIndices).toEqual([0, 1, 2, 4]);
    // below C's 0.31, C goes too
    expect(findDuplicates(texts, { near: true, threshold: 0.3, recallAtThreshold: 0.999 }).keptIndices).toEqual([0, 4]);
  });

  it('keeps the higher-scored copy when scores are given', () => {
    const scores = [1, 5, 0, 2, undefined];
    // exact only: A_NOISY (2) outranks A (1)
    const exact = findDuplicates(texts, {}, scores);
    expect(exact.keptIndices).toEqual([1, 2, 3, 4]);
    expect(exact.duplicates).toEqual([{ index: 0, duplicateOf: 3, kind: 'exact', similarity: 1 }]);
    // with near: visit order B(5), A_NOISY(2), A(1), C(0), D(none); B is kept, A_NOISY and A are
    // each within J = 0.9 of it
    const near = findDuplicates(texts, { near: true }, scores);
    expect(near.keptIndices).toEqual([1, 2, 4]);
    expect(near.duplicates.map((d) => [d.index, d.duplicateOf, d.kind, d.similarity.toFixed(6)])).toEqual([
      [0, 1, 'near', '0.900000'],
      [3, 1, 'near', '0.900000'],
    ]);
    expect(visitOrder(5, [1, 5, 0, 2, undefined])).toEqual([1, 3, 0, 2, 4]);
    expect(visitOrder(3, [2, NaN, 2])).toEqual([0, 2, 1]);
  });

  it('finds every planted near duplicate among many rows and nothing else', () => {
    // 60 base texts of 30 distinct words and, for each, a copy with its last word changed:
    // 28 shingles, 27 shared, J = 27/29 ≈ 0.93
    const bases = Array.from({ length: 60 }, (_, b) => words(`t${b}_`, 30));
    const rows = [...bases.map((w) => w.join(' ')), ...bases.map((w) => [...w.slice(0, 29), 'changed'].join(' '))];
    const result = findDuplicates(rows, { near: true, seed: 3 });
    expect(result.keptIndices).toEqual(Array.from({ length: 60 }, (_, i) => i));
    expect(result.duplicates.map((d) => d.duplicateOf)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    expect(result.numCandidatePairs).toBe(60); // unrelated texts never share a band here
  });

  it('deduplicates on the part of a row asked for', () => {
    const rows: CurationRow[] = [
      { prompt: 'Name a river.', response: 'The Nile.' },
      { prompt: 'name a river', response: 'The Amazon.' },
      { prompt: 'Name a lake.', response: 'the nile' },
    ];
    const on = (field: 'row' | 'prompt' | 'response') => findDuplicates(rows.map((r) => dedupText(r, field))).keptIndices;
    expect(on('row')).toEqual([0, 1, 2]);
    expect(on('prompt')).toEqual([0, 2]);
    expect(on('response')).toEqual([0, 1]);
  });

  it('rejects inconsistent options with the field named', () => {
    expect(() => findDuplicates([], { threshold: 1 })).toThrow(/^dedup: options\.threshold: /);
    expect(() => findDuplicates([], { numBands: 4 })).toThrow('dedup: options.numBands and options.rowsPerBand: give both or neither');
    expect(() => findDuplicates([], { numBands: 20, rowsPerBand: 10 })).toThrow('dedup: options.numBands: 20 bands × 10 rows exceed 128 permutations');
  });
});
