/**
 * Semantic deduplication, Llama 3's greedy procedure (arXiv 2407.21783 §4.2.3): "we first cluster
 * complete dialogs using RoBERTa and within each cluster sort them by quality score × difficulty
 * score. We then do greedy selection by iterating through all sorted examples, and only keeping
 * the ones that have maximum cosine similarity less than a threshold to the examples seen so far
 * in the cluster."
 *
 * Here the embedder is a tfalign checkpoint (`embed.ts`: mean-pooled last hidden states,
 * L2-normalised, optionally centred), the clustering k-means (`kmeans.ts`), and a row is compared
 * with the rows already *kept* in its cluster.
 *
 * Quality × difficulty. Reward-model scores can be negative and mean NLLs live on another scale,
 * so a raw product can order rows backwards (a negative quality times a higher difficulty ranks
 * lower). Each score is therefore first replaced by its percentile rank over the rows,
 * rank(x) = |{rows with score ≤ x}| / |{rows with a score}| ∈ (0, 1], and the ranks multiplied;
 * for positive scores this orders rows as the paper's product does in spirit (better and harder
 * first) without depending on units. A row without a score in a set that other rows have counts
 * as rank 0 (last). When no row has a quality (or a difficulty) score, that factor is left out
 * and the other alone orders the rows; with neither, input order decides (the first occurrence is
 * kept). Ties keep input order.
 */
import { z } from 'zod';
import type { LlamaModel } from '../../src/model/llama.js';
import type { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { centerEmbeddings, cosineSimilarity, embedTexts, type Embeddings } from './embed.js';
import { kmeans } from './kmeans.js';
import { numericField, rowText, SCORE_FIELDS, type CurationRow } from './row-text.js';
import { tagTopics, type TopicTags } from './topics.js';

export const SemanticDedupOptionsSchema = z
  .object({
    numClusters: z
      .number()
      .int()
      .min(1)
      .nullable()
      .default(null)
      .describe('k of k-means; rows are only compared within their cluster. null: ⌈√N⌉ (100 for 10,000 rows), so clusters hold ~√N rows each.'),
    similarity: z
      .number()
      .gt(-1)
      .max(1)
      .default(0.95)
      .describe('Cosine similarity at or above which a row duplicates a kept row of its cluster. Small checkpoints embed coarsely: inspect the rejects and tune on your data.'),
    center: z.boolean().default(true).describe('Subtract the mean embedding before comparing (removes the common direction of decoder states; see embed.ts).'),
    seed: z.number().int().default(0).describe('Seed of k-means++.'),
    maxIterations: z.number().int().min(1).default(50).describe('Most Lloyd iterations of k-means.'),
    tolerance: z.number().min(0).default(1e-4).describe('k-means stops once no centre moves farther than this.'),
    batchSize: z.number().int().min(1).default(16).describe('Texts per embedding forward pass.'),
    maxTokens: z.number().int().min(1).default(256).describe('Tokens embedded per row (the beginning is kept); at most the model\'s context.'),
    numTopics: z
      .number()
      .int()
      .min(1)
      .nullable()
      .default(null)
      .describe('Topic tagging: cluster the kept rows into this many topics and report the mix (null: no tagging).'),
    numLabelWords: z.number().int().min(1).default(3).describe('Words in each topic\'s label.'),
  })
  .strict()
  .describe('Semantic deduplication (embeddings, k-means, greedy selection by quality × difficulty) and topic tagging.');
export type SemanticDedupOptions = z.output<typeof SemanticDedupOptionsSchema>;
export type SemanticDedupOptionsInput = z.input<typeof SemanticDedupOptionsSchema>;

/** Percentile ranks in (0, 1] of the present scores; missing or non-finite scores get 0. */
export function percentileRanks(scores: readonly (number | undefined)[]): number[] {
  const present = scores.filter((s): s is number => s !== undefined && Number.isFinite(s)).sort((a, b) => a - b);
  return scores.map((s) => {
    if (s === undefined || !Number.isFinite(s)) return 0;
    // upper bound: the number of present scores ≤ s
    let lo = 0;
    let hi = present.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (present[mid]! <= s) lo = mid + 1;
      else hi = mid;
    }
    return lo / present.length;
  });
}

/**
 * The order key of each row: percentile rank of quality × percentile rank of difficulty, a factor
 * left out when no row has that score; undefined when neither is given (module doc).
 */
export function qualityDifficultyRank(
  numRows: number,
  quality?: readonly (number | undefined)[],
  difficulty?: readonly (number | undefined)[],
): number[] | undefined {
  const factors = [quality, difficulty].filter(
    (scores): scores is readonly (number | undefined)[] => scores !== undefined && scores.some((s) => s !== undefined && Number.isFinite(s)),
  );
  if (factors.length === 0) return undefined;
  for (const scores of factors) if (scores.length !== numRows) throw new Error(`semantic dedup: ${scores.length} scores for ${numRows} rows`);
  const ranks = factors.map(percentileRanks);
  return Array.from({ length: numRows }, (_, i) => ranks.reduce((product, r) => product * r[i]!, 1));
}

/** A row removed because it is too close to a better row of its cluster. */
export interface SemanticDuplicate {
  index: number;
  /** The kept row it is most similar to. */
  duplicateOf: number;
  /** Their cosine similarity. */
  similarity: number;
  cluster: number;
}

export interface GreedySelection {
  /** Kept rows, ascending. */
  keptIndices: number[];
  /** Removed rows, by ascending index. */
  duplicates: SemanticDuplicate[];
}

/**
 * Llama 3's greedy selection: within each cluster, visit rows by descending `rank` (input order
 * when undefined or tied) and keep a row only if its cosine similarity to every row already kept
 * in the cluster is below `similarity`.
 */
export function greedySelect(embeddings: Embeddings, assignments: Int32Array, similarity: number, rank?: readonly number[]): GreedySelection {
  const numRows = assignments.length;
  const order = Array.from({ length: numRows }, (_, i) => i);
  if (rank !== undefined) order.sort((a, b) => rank[b]! - rank[a]! || a - b);
  const keptInCluster = new Map<number, number[]>();
  const selection: GreedySelection = { keptIndices: [], duplicates: [] };
  for (const i of order) {
    const cluster = assignments[i]!;
    const kept = keptInCluster.get(cluster) ?? [];
    let closest = -1;
    let closestSimilarity = -Infinity;
    for (const j of kept) {
      const s = cosineSimilarity(embeddings, i, j);
      if (s > closestSimilarity) {
        closestSimilarity = s;
        closest = j;
      }
    }
    if (closest >= 0 && closestSimilarity >= similarity) {
      selection.duplicates.push({ index: i, duplicateOf: closest, similarity: closestSimilarity, cluster });
    } else {
      kept.push(i);
      keptInCluster.set(cluster, kept);
      selection.keptIndices.push(i);
    }
  }
  selection.keptIndices.sort((a, b) => a - b);
  selection.duplicates.sort((a, b) => a.index - b.index);
  return selection;
}

export interface SemanticDedupResult extends GreedySelection {
  /** Cluster of every row. */
  assignments: Int32Array;
  /** k used. */
  numClusters: number;
  /** k-means iterations run and whether they converged. */
  numIterations: number;
  converged: boolean;
}

/**
 * Clusters unit-norm `embeddings` with k-means and runs the greedy selection in each cluster,
 * ordering rows by `qualityDifficultyRank(quality, difficulty)`. The embeddings are used as given
 * (centre them first with `centerEmbeddings` when `options.center`, as `semanticDedupRows` does).
 */
export function semanticDedup(
  embeddings: Embeddings,
  options: SemanticDedupOptionsInput = {},
  scores: { quality?: readonly (number | undefined)[]; difficulty?: readonly (number | undefined)[] } = {},
): SemanticDedupResult {
  const o = parseSemanticOptions(options);
  const numRows = embeddings.values.length / embeddings.dim;
  const numClusters = o.numClusters ?? Math.max(1, Math.ceil(Math.sqrt(numRows)));
  const clustering = kmeans(embeddings.values, embeddings.dim, { numClusters, seed: o.seed, maxIterations: o.maxIterations, tolerance: o.tolerance });
  const rank = qualityDifficultyRank(numRows, scores.quality, scores.difficulty);
  const selection = greedySelect(embeddings, clustering.assignments, o.similarity, rank);
  return {
    ...selection,
    assignments: clustering.assignments,
    numClusters: clustering.numClusters,
    numIterations: clustering.numIterations,
    converged: clustering.converged,
  };
}

/** Validates semantic-dedup options; one-line error naming the field. */
export function parseSemanticOptions(options: SemanticDedupOptionsInput): SemanticDedupOptions {
  const parsed = SemanticDedupOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`semantic dedup: options.${issue.path.join('.')}: ${issue.message}`);
  }
  return parsed.data;
}

export interface SemanticDedupRowsResult extends SemanticDedupResult {
  /** The embeddings compared (centred when `options.center`), one row per input row. */
  embeddings: Embeddings;
  /** With `options.numTopics`: the topic of each *kept* row (in `keptIndices` order) and the mix. */
  topics: TopicTags | undefined;
}

/**
 * Semantic deduplication of rows: embeds each complete row (`rowText`: prompt turns and
 * responses) with `model`, centres the embeddings (`options.center`), clusters them and keeps rows
 * greedily by the quality × difficulty rank of their `quality` and `difficulty` fields (written by
 * `data score`; see the module doc for missing scores); with `numTopics`, tags the kept rows.
 * `hooks.onBatch` reports embedding progress, `hooks.describeRow` names rows in errors.
 */
export function semanticDedupRows(
  model: LlamaModel,
  tokenizer: Tokenizer,
  rows: readonly CurationRow[],
  options: SemanticDedupOptionsInput = {},
  hooks: { onBatch?: (numDone: number, numTotal: number) => void; describeRow?: (index: number) => string } = {},
): SemanticDedupRowsResult {
  const o = parseSemanticOptions(options);
  const texts = rows.map(rowText);
  const embeddings = embedTexts(model, tokenizer, texts, { batchSize: o.batchSize, maxTokens: o.maxTokens, describeRow: hooks.describeRow }, hooks.onBatch);
  if (o.center) centerEmbeddings(embeddings);
  const result = semanticDedup(embeddings, o, {
    quality: rows.map((row) => numericField(row, SCORE_FIELDS.quality)),
    difficulty: rows.map((row) => numericField(row, SCORE_FIELDS.difficulty)),
  });
  let topics: TopicTags | undefined;
  if (o.numTopics !== null) {
    const keptValues = new Float32Array(result.keptIndices.length * embeddings.dim);
    result.keptIndices.forEach((i, k) => keptValues.set(embeddings.values.subarray(i * embeddings.dim, (i + 1) * embeddings.dim), k * embeddings.dim));
    topics = tagTopics(
      { values: keptValues, dim: embeddings.dim },
      result.keptIndices.map((i) => texts[i]!),
      { numTopics: o.numTopics, seed: o.seed, numLabelWords: o.numLabelWords, maxIterations: o.maxIterations, tolerance: o.tolerance },
    );
  }
  return { ...result, embeddings, topics };
}
