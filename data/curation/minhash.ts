/**
 * MinHash signatures and locality-sensitive hashing (LSH) for near-duplicate detection
 * (Broder, "On the resemblance and containment of documents", 1997; Leskovec, Rajaraman &
 * Ullman, "Mining of Massive Datasets", ch. 3).
 *
 * A text becomes the set S of its word k-shingles (k consecutive words after `normalizeText`),
 * each hashed to 32 bits. For a random permutation π of the 32-bit integers,
 * P[min π(S₁) = min π(S₂)] = J(S₁, S₂) = |S₁ ∩ S₂| / |S₁ ∪ S₂|, so the fraction of equal entries of
 * two signatures of `numPermutations` minima estimates the Jaccard similarity.
 *
 * The permutations are πᵢ(x) = fmix32(aᵢ·x + bᵢ mod 2³²), aᵢ odd: multiplication by an odd number,
 * addition and MurmurHash3's finaliser fmix32 are each bijections of the 32-bit integers, so every
 * πᵢ is a permutation; aᵢ, bᵢ come from `Rng(seed)`, so signatures are reproducible.
 *
 * LSH: the signature is cut into b bands of r rows; two texts become a candidate pair when they
 * agree on every row of at least one band, which happens with probability 1 − (1 − sʳ)ᵇ at
 * Jaccard s — an S-curve whose steep part sits near (1/b)^(1/r). `lshParameters` picks (b, r) with
 * b·r ≤ numPermutations so that a pair at the threshold becomes a candidate with probability at
 * least `recallAtThreshold` (0.95 by default), with the least false-positive area below the
 * threshold. This departs from `datasketch`, which weighs false positives and negatives equally
 * and so, at t = 0.8 and 128 permutations (b = 9, r = 13), misses 60% of pairs at exactly 0.8 and
 * 7% at 0.9; here every candidate is verified, so a false positive costs one comparison while a
 * false negative leaves a duplicate in the data.
 */
import { Rng } from '../../src/util/rng.js';
import { normalizedWords } from './text.js';

/** MurmurHash3's 32-bit finaliser: a bijection with full avalanche. */
function fmix32(x: number): number {
  let h = x >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** FNV-1a over the UTF-16 code units of `text`, then fmix32 (FNV's low bits alone mix poorly). */
export function hashString32(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return fmix32(hash);
}

/**
 * The distinct hashes of the word k-shingles of `text`, sorted ascending. A text of fewer than k
 * (but at least one) words is one shingle of all its words; a text without words has none.
 */
export function shingleHashes(text: string, shingleWords: number): Uint32Array {
  const words = normalizedWords(text);
  const hashes = new Set<number>();
  if (words.length > 0 && words.length < shingleWords) hashes.add(hashString32(words.join(' ')));
  for (let start = 0; start + shingleWords <= words.length; start++) {
    hashes.add(hashString32(words.slice(start, start + shingleWords).join(' ')));
  }
  return Uint32Array.from(hashes).sort();
}

/** Jaccard similarity |A ∩ B| / |A ∪ B| of two sorted sets of hashes; two empty sets are identical (1). */
export function jaccard(a: Uint32Array, b: Uint32Array): number {
  if (a.length === 0 && b.length === 0) return 1;
  let i = 0;
  let j = 0;
  let numShared = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      numShared++;
      i++;
      j++;
    } else if (a[i]! < b[j]!) i++;
    else j++;
  }
  return numShared / (a.length + b.length - numShared);
}

/** The seeded permutations πᵢ(x) = fmix32(aᵢ·x + bᵢ) of one MinHash family. */
export class MinHasher {
  private readonly multipliers: Uint32Array;
  private readonly offsets: Uint32Array;

  constructor(
    readonly numPermutations: number,
    readonly seed: number,
  ) {
    if (!Number.isInteger(numPermutations) || numPermutations < 1) throw new Error(`minhash: numPermutations must be a positive integer, got ${numPermutations}`);
    const rng = new Rng(seed);
    this.multipliers = new Uint32Array(numPermutations);
    this.offsets = new Uint32Array(numPermutations);
    for (let i = 0; i < numPermutations; i++) {
      this.multipliers[i] = (rng.nextUint32() | 1) >>> 0; // odd: invertible mod 2³²
      this.offsets[i] = rng.nextUint32();
    }
  }

  /** The signature of a shingle set: for each permutation, the least permuted hash (0xffffffff for an empty set). */
  signature(shingles: Uint32Array): Uint32Array {
    const signature = new Uint32Array(this.numPermutations).fill(0xffffffff);
    for (let s = 0; s < shingles.length; s++) {
      const x = shingles[s]!;
      for (let i = 0; i < this.numPermutations; i++) {
        const permuted = fmix32(Math.imul(x, this.multipliers[i]!) + this.offsets[i]!);
        if (permuted < signature[i]!) signature[i] = permuted;
      }
    }
    return signature;
  }
}

/** The MinHash estimate of Jaccard: the fraction of signature entries that agree. */
export function estimatedJaccard(a: Uint32Array, b: Uint32Array): number {
  let numEqual = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) numEqual++;
  return numEqual / a.length;
}

/** How a signature is cut for LSH: `numBands` bands of `rowsPerBand` entries (b·r ≤ numPermutations). */
export interface LshParameters {
  numBands: number;
  rowsPerBand: number;
}

/** P(candidate | Jaccard s) = 1 − (1 − sʳ)ᵇ. */
export function candidateProbability(similarity: number, { numBands, rowsPerBand }: LshParameters): number {
  return 1 - Math.pow(1 - Math.pow(similarity, rowsPerBand), numBands);
}

/** ∫ f over [from, to] by Simpson's rule on 64 intervals (the integrands here are smooth). */
function integrate(f: (x: number) => number, from: number, to: number): number {
  const numIntervals = 64;
  const h = (to - from) / numIntervals;
  let sum = f(from) + f(to);
  for (let i = 1; i < numIntervals; i++) sum += (i % 2 === 1 ? 4 : 2) * f(from + i * h);
  return (sum * h) / 3;
}

/**
 * The (b, r) with b·r ≤ numPermutations and P(candidate | threshold) ≥ recallAtThreshold that
 * minimise the false-positive area ∫₀ᵗ P(s) ds; when no cut reaches the recall, the one with the
 * highest P(candidate | threshold). For t = 0.8, 128 permutations and recall 0.95 this gives
 * 13 bands of 7 rows: P = 0.95 at 0.8, 0.9998 at 0.9, 0.003 at 0.3.
 */
export function lshParameters(threshold: number, numPermutations: number, recallAtThreshold = 0.95): LshParameters {
  if (!(threshold > 0 && threshold < 1)) throw new Error(`minhash: threshold must be in (0, 1), got ${threshold}`);
  if (!(recallAtThreshold > 0 && recallAtThreshold < 1)) throw new Error(`minhash: recallAtThreshold must be in (0, 1), got ${recallAtThreshold}`);
  let best: LshParameters | undefined;
  let bestArea = Infinity;
  let mostRecall: LshParameters = { numBands: numPermutations, rowsPerBand: 1 };
  for (let numBands = 1; numBands <= numPermutations; numBands++) {
    for (let rowsPerBand = 1; rowsPerBand * numBands <= numPermutations; rowsPerBand++) {
      const params = { numBands, rowsPerBand };
      const recall = candidateProbability(threshold, params);
      if (recall > candidateProbability(threshold, mostRecall)) mostRecall = params;
      if (recall < recallAtThreshold) continue;
      const falsePositiveArea = integrate((s) => candidateProbability(s, params), 0, threshold);
      if (falsePositiveArea < bestArea - 1e-12) {
        bestArea = falsePositiveArea;
        best = params;
      }
    }
  }
  return best ?? mostRecall;
}

/**
 * An LSH index over signatures: `candidates` returns the ids of inserted signatures that share at
 * least one band with the query, `insert` adds one. A band's key is its r values joined, so two
 * signatures share a bucket only when those values are equal.
 */
export class LshIndex {
  private readonly buckets = new Map<string, number[]>();

  constructor(readonly params: LshParameters) {}

  private bandKey(signature: Uint32Array, band: number): string {
    const from = band * this.params.rowsPerBand;
    return `${band}:${signature.subarray(from, from + this.params.rowsPerBand).join(',')}`;
  }

  /** Ids of inserted signatures sharing a band with `signature`, each once, in insertion order per band. */
  candidates(signature: Uint32Array): number[] {
    const found = new Set<number>();
    for (let band = 0; band < this.params.numBands; band++) {
      for (const id of this.buckets.get(this.bandKey(signature, band)) ?? []) found.add(id);
    }
    return [...found];
  }

  insert(id: number, signature: Uint32Array): void {
    for (let band = 0; band < this.params.numBands; band++) {
      const key = this.bandKey(signature, band);
      const bucket = this.buckets.get(key);
      if (bucket === undefined) this.buckets.set(key, [id]);
      else bucket.push(id);
    }
  }
}
