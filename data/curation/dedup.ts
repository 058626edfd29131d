/**
 * Exact and near-duplicate removal.
 *
 * Exact: two texts are duplicates when their `normalizeText` forms (NFKC, lowercase, punctuation
 * removed, whitespace collapsed) have the same SHA-1, so "Hello, world!" and "hello   world" are
 * one text.
 *
 * Near (MinHash + LSH, `minhash.ts`): word k-shingles, `numPermutations` seeded permutations, bands
 * × rows picked from the Jaccard threshold; a candidate pair from the LSH index is a duplicate
 * when its similarity — the true Jaccard of the shingle sets (`verify: "jaccard"`, default) or the
 * MinHash estimate (`"estimate"`, no shingle sets kept) — is at least the threshold. LSH misses
 * a pair at exactly the threshold with probability 1 − `recallAtThreshold` (5%), far less above
 * it (0.02% at 0.9 for the defaults); verification removes every false candidate.
 *
 * Which copy survives: rows are visited best first — by descending score when scores are given
 * (rows without a score after those with one), by input order otherwise (ties too) — and a row is
 * dropped when it duplicates a row already kept, so the first occurrence, or the higher-quality
 * one, stays. The kept rows are returned in input order. Everything is deterministic for a seed.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { normalizeText } from './text.js';
import { LshIndex, MinHasher, estimatedJaccard, jaccard, lshParameters, shingleHashes, type LshParameters } from './minhash.js';
import { DEDUP_FIELDS } from './row-text.js';

export const DedupOptionsSchema = z
  .object({
    on: z
      .enum(DEDUP_FIELDS)
      .default('row')
      .describe('What is compared: "row" (prompt and every response), "prompt" (prompts only: one row per prompt) or "response" (the main response).'),
    exact: z.boolean().default(true).describe('Remove rows whose normalized text (NFKC, lowercase, no punctuation, collapsed whitespace) is identical.'),
    near: z.boolean().default(false).describe('Also remove near duplicates with MinHash + LSH.'),
    threshold: z
      .number()
      .gt(0)
      .lt(1)
      .default(0.8)
      .describe('Jaccard similarity of word shingles at or above which two rows are near duplicates.'),
    shingleWords: z.number().int().min(1).default(3).describe('k: words per shingle (3 suits chat-length texts; 5 is usual for web documents).'),
    numPermutations: z.number().int().min(8).max(1024).default(128).describe('MinHash permutations per signature (estimate standard error ≈ √(J(1−J)/n)).'),
    recallAtThreshold: z
      .number()
      .gt(0)
      .lt(1)
      .default(0.95)
      .describe('Least probability that LSH proposes a pair whose similarity is exactly the threshold; (b, r) are chosen for it (lshParameters). Higher: fewer missed duplicates, more candidates to verify.'),
    numBands: z.number().int().min(1).nullable().default(null).describe('LSH bands b; null: chosen with rowsPerBand from the threshold (lshParameters).'),
    rowsPerBand: z.number().int().min(1).nullable().default(null).describe('LSH rows per band r; null: chosen with numBands from the threshold.'),
    verify: z
      .enum(['jaccard', 'estimate'])
      .default('jaccard')
      .describe('How a candidate pair is confirmed: the true Jaccard of the shingle sets, or the MinHash estimate (less memory).'),
    seed: z.number().int().default(0).describe('Seed of the MinHash permutations.'),
  })
  .strict()
  .describe('Exact and MinHash near-duplicate removal.');
export type DedupOptions = z.output<typeof DedupOptionsSchema>;
export type DedupOptionsInput = z.input<typeof DedupOptionsSchema>;

/** A removed row: which kept row it duplicates, how, and how similar they are (1 for exact). */
export interface DuplicateRow {
  index: number;
  duplicateOf: number;
  kind: 'exact' | 'near';
  similarity: number;
}

export interface DedupResult {
  /** Indices of the kept rows, ascending. */
  keptIndices: number[];
  /** Removed rows, by ascending index. */
  duplicates: DuplicateRow[];
  numExact: number;
  numNear: number;
  /** The LSH cut used (undefined without `near`). */
  lsh: LshParameters | undefined;
  /** Candidate pairs the LSH index proposed and that were verified. */
  numCandidatePairs: number;
}

/** SHA-1 of the normalized text, hex: the exact-duplicate key. */
export function exactKey(text: string): string {
  return createHash('sha1').update(normalizeText(text)).digest('hex');
}

/**
 * The order rows are visited in: by descending score (missing or non-finite scores last), input
 * order among equals; input order when no scores are given.
 */
export function visitOrder(numRows: number, scores?: readonly (number | undefined)[]): number[] {
  const order = Array.from({ length: numRows }, (_, i) => i);
  if (scores === undefined) return order;
  if (scores.length !== numRows) throw new Error(`dedup: ${scores.length} scores for ${numRows} rows`);
  const key = (i: number): number => {
    const s = scores[i];
    return s !== undefined && Number.isFinite(s) ? s : -Infinity;
  };
  return order.sort((a, b) => key(b) - key(a) || a - b);
}

/** Validates dedup options with the schema and their cross-field rules; one-line error naming the field. */
export function parseDedupOptions(options: DedupOptionsInput): DedupOptions {
  const parsed = DedupOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`dedup: options.${issue.path.join('.')}: ${issue.message}`);
  }
  const o = parsed.data;
  if ((o.numBands === null) !== (o.rowsPerBand === null)) throw new Error('dedup: options.numBands and options.rowsPerBand: give both or neither');
  if (o.numBands !== null && o.rowsPerBand !== null && o.numBands * o.rowsPerBand > o.numPermutations) {
    throw new Error(`dedup: options.numBands: ${o.numBands} bands × ${o.rowsPerBand} rows exceed ${o.numPermutations} permutations`);
  }
  return o;
}

/**
 * Finds exact and near duplicates among `texts` (the texts of rows, `dedupText`), keeping the
 * first occurrence or, with `scores`, the best-scored one (module doc). `options.on` is not used
 * here: the caller has already picked the texts.
 */
export function findDuplicates(texts: readonly string[], options: DedupOptionsInput = {}, scores?: readonly (number | undefined)[]): DedupResult {
  const o = parseDedupOptions(options);
  const lsh = o.near ? (o.numBands !== null && o.rowsPerBand !== null ? { numBands: o.numBands, rowsPerBand: o.rowsPerBand } : lshParameters(o.threshold, o.numPermutations, o.recallAtThreshold)) : undefined;
  const hasher = o.near ? new MinHasher(o.numPermutations, o.seed) : undefined;
  const index = lsh ? new LshIndex(lsh) : undefined;
  const keptByKey = new Map<string, number>();
  const shinglesOf = new Map<number, Uint32Array>();
  const signatureOf = new Map<number, Uint32Array>();
  const result: DedupResult = { keptIndices: [], duplicates: [], numExact: 0, numNear: 0, lsh, numCandidatePairs: 0 };

  for (const i of visitOrder(texts.length, scores)) {
    const text = texts[i]!;
    // 1) exact: the same normalized text as a kept row
    const key = o.exact ? exactKey(text) : undefined;
    const exactOf = key === undefined ? undefined : keptByKey.get(key);
    if (exactOf !== undefined) {
      result.duplicates.push({ index: i, duplicateOf: exactOf, kind: 'exact', similarity: 1 });
      result.numExact++;
      continue;
    }
    // 2) near: the most similar kept candidate at or above the threshold
    if (hasher !== undefined && index !== undefined) {
      const shingles = shingleHashes(text, o.shingleWords);
      const signature = hasher.signature(shingles);
      let best: { of: number; similarity: number } | undefined;
      for (const candidate of index.candidates(signature)) {
        result.numCandidatePairs++;
        const similarity = o.verify === 'jaccard' ? jaccard(shingles, shinglesOf.get(candidate)!) : estimatedJaccard(signature, signatureOf.get(candidate)!);
        if (similarity >= o.threshold && (best === undefined || similarity > best.similarity)) best = { of: candidate, similarity };
      }
      if (best !== undefined) {
        result.duplicates.push({ index: i, duplicateOf: best.of, kind: 'near', similarity: best.similarity });
        result.numNear++;
        continue;
      }
      index.insert(i, signature);
      if (o.verify === 'jaccard') shinglesOf.set(i, shingles);
      else signatureOf.set(i, signature);
    }
    if (key !== undefined) keptByKey.set(key, i);
    result.keptIndices.push(i);
  }
  result.keptIndices.sort((a, b) => a - b);
  result.duplicates.sort((a, b) => a.index - b.index);
  return result;
}
