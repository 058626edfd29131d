/**
 * Topic tagging: each row goes to the nearest of k clusters of its embedding (k-means), and the
 * mix — rows per cluster, each cluster labelled with its most characteristic words — shows what
 * the data is about, so that a user can rebalance it.
 *
 * A cluster's label is its top words by document frequency in the cluster × inverse document
 * frequency over all rows, df_c(w) · ln(N / df(w)) (class-based TF-IDF): a word in most rows of
 * the cluster and few rows elsewhere ranks first, a word every row has scores 0. Words are
 * `normalizedWords` of at least 3 characters outside a short English stop list; ties go to the
 * alphabetically first word.
 */
import { kmeans } from './kmeans.js';
import type { Embeddings } from './embed.js';
import { normalizedWords } from './text.js';

/** Function words that say nothing about a topic. */
const STOP_WORDS = new Set(
  (
    'the and for are but not you your with this that have has had was were will would can could should ' +
    'its from they them their there here what which who whom when where why how all any each into than ' +
    'then also just about over such only very more most some other our out off one two use used using'
  ).split(' '),
);

/** One cluster of the mix. */
export interface Topic {
  cluster: number;
  numRows: number;
  /** Its most characteristic words, best first (may be fewer than asked when the rows have few words). */
  label: string[];
}

/** Rows per cluster with a label for each (module doc); clusters in index order, empty ones included. */
export function topicMix(texts: readonly string[], assignments: Int32Array, numClusters: number, numLabelWords = 3): Topic[] {
  if (assignments.length !== texts.length) throw new Error(`topics: ${assignments.length} assignments for ${texts.length} texts`);
  const documentFrequency = new Map<string, number>();
  const clusterFrequency = Array.from({ length: numClusters }, () => new Map<string, number>());
  const numRows = new Array<number>(numClusters).fill(0);
  texts.forEach((text, i) => {
    const cluster = assignments[i]!;
    numRows[cluster]!++;
    const words = new Set(normalizedWords(text).filter((w) => w.length >= 3 && !STOP_WORDS.has(w)));
    for (const word of words) {
      documentFrequency.set(word, (documentFrequency.get(word) ?? 0) + 1);
      clusterFrequency[cluster]!.set(word, (clusterFrequency[cluster]!.get(word) ?? 0) + 1);
    }
  });
  return clusterFrequency.map((frequencies, cluster) => {
    const scored = [...frequencies].map(([word, df]) => ({ word, score: df * Math.log(texts.length / documentFrequency.get(word)!) }));
    const label = scored
      .filter((w) => w.score > 0)
      .sort((a, b) => b.score - a.score || (a.word < b.word ? -1 : a.word > b.word ? 1 : 0))
      .slice(0, numLabelWords)
      .map((w) => w.word);
    return { cluster, numRows: numRows[cluster]!, label };
  });
}

export interface TopicTags {
  /** Topic of each row. */
  assignments: Int32Array;
  topics: Topic[];
}

/** Clusters the rows' embeddings into `numTopics` topics (k-means, seeded) and labels them. */
export function tagTopics(
  embeddings: Embeddings,
  texts: readonly string[],
  options: { numTopics: number; seed: number; numLabelWords?: number; maxIterations?: number; tolerance?: number },
): TopicTags {
  const clustering = kmeans(embeddings.values, embeddings.dim, {
    numClusters: options.numTopics,
    seed: options.seed,
    maxIterations: options.maxIterations,
    tolerance: options.tolerance,
  });
  return { assignments: clustering.assignments, topics: topicMix(texts, clustering.assignments, clustering.numClusters, options.numLabelWords) };
}
