import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../../src/backend.js';
import { loadPretrained } from '../../../src/model/pretrained.js';
import type { LlamaModel } from '../../../src/model/llama.js';
import { FullAttention } from '../../../src/model/attention.js';
import { Tokenizer } from '../../../src/tokenizer/tokenizer.js';
import { centerEmbeddings, cosineSimilarity, embedTexts, embeddingTokenIds } from '../../../data/curation/embed.js';
import { greedySelect, percentileRanks, qualityDifficultyRank, semanticDedup, semanticDedupRows } from '../../../data/curation/semantic-dedup.js';
import { topicMix } from '../../../data/curation/topics.js';
import type { CurationRow } from '../../../data/curation/row-text.js';
import { buildTinyCheckpoints } from './fixtures.js';

describe('quality × difficulty order', () => {
  it('multiplies percentile ranks (hand-computed), missing scores last', () => {
    // quality present: −1, 0.5, 2 → ranks 1/3, 2/3, 1; missing → 0. difficulty 1, 3, 2, 4 → 1/4, 3/4, 1/2, 1.
    expect(percentileRanks([0.5, -1, 2, undefined])).toEqual([2 / 3, 1 / 3, 1, 0]);
    expect(percentileRanks([3, 3, 1])).toEqual([1, 1, 1 / 3]);
    const rank = qualityDifficultyRank(4, [0.5, -1, 2, undefined], [1, 3, 2, 4])!;
    [1 / 6, 1 / 4, 1 / 2, 0].forEach((r, i) => expect(rank[i]).toBeCloseTo(r, 12));
    // one factor only: that factor's ranks; none: undefined (input order)
    expect(qualityDifficultyRank(3, [0.1, 0.3, 0.2])).toEqual([1 / 3, 1, 2 / 3]);
    expect(qualityDifficultyRank(3, [undefined, undefined, undefined], [5, 4, 6])).toEqual([2 / 3, 1 / 3, 1]);
    expect(qualityDifficultyRank(2)).toBeUndefined();
  });
});

describe('greedySelect', () => {
  // unit vectors in 2-D: v0 and v1 10° apart (cosine 0.985), v2 orthogonal to v0
  const angle = (degrees: number) => [Math.cos((degrees * Math.PI) / 180), Math.sin((degrees * Math.PI) / 180)];
  const embeddings = { values: Float32Array.from([...angle(0), ...angle(10), ...angle(90)]), dim: 2 };

  it('keeps the best-ranked row of a close pair and rows far from every kept one', () => {
    const selection = greedySelect(embeddings, Int32Array.from([0, 0, 0]), 0.95, [0.5, 0.9, 0.1]);
    expect(selection.keptIndices).toEqual([1, 2]);
    expect(selection.duplicates).toHaveLength(1);
    expect(selection.duplicates[0]).toMatchObject({ index: 0, duplicateOf: 1, cluster: 0 });
    expect(selection.duplicates[0]!.similarity).toBeCloseTo(Math.cos((10 * Math.PI) / 180), 6);
    // no ranks: input order, so row 0 stays; threshold above 0.985: nothing removed
    expect(greedySelect(embeddings, Int32Array.from([0, 0, 0]), 0.95).keptIndices).toEqual([0, 2]);
    expect(greedySelect(embeddings, Int32Array.from([0, 0, 0]), 0.99).keptIndices).toEqual([0, 1, 2]);
    // rows in different clusters are never compared
    expect(greedySelect(embeddings, Int32Array.from([0, 1, 0]), 0.95, [0.5, 0.9, 0.1]).keptIndices).toEqual([0, 1, 2]);
  });
});

describe('semantic dedup with a tiny model', () => {
  const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-semdedup-'));
  let model: LlamaModel;
  let tokenizer: Tokenizer;

  beforeAll(async () => {
    await initBackend('wasm', { quiet: true });
    const dirs = await buildTinyCheckpoints(tmpRoot);
    model = await loadPretrained(dirs.policyDir);
    tokenizer = await Tokenizer.fromFolder(dirs.policyDir);
  });
  afterAll(() => {
    model?.dispose();
    fs.rmSync(tmpRoot, { recursive: true, force: true });
  });

  const TEXTS = [
    'The river flows about the stone.',
    'bake bread',
    'The river flows about the stone.',
    'music paper light cloud music paper light cloud music',
    'Tell me about water and light.',
  ];

  it('embeds as the mean of the final hidden states over the text tokens, batch-independent', () => {
    const numTensors = tf.memory().numTensors;
    const batched = embedTexts(model, tokenizer, TEXTS, { batchSize: 5, maxTokens: 64 });
    const single = embedTexts(model, tokenizer, TEXTS, { batchSize: 1, maxTokens: 64 });
    expect(tf.memory().numTensors).toBe(numTensors);
    expect(batched.dim).toBe(64);
    for (let i = 0; i < batched.values.length; i++) expect(Math.abs(batched.values[i]! - single.values[i]!)).toBeLessThan(1e-5);
    // reference for text 1: one unpadded forward, mean over positions 1.. (BOS left out), normalised
    const ids = embeddingTokenIds(tokenizer, TEXTS[1]!, 64);
    expect(ids[0]).toBe(tokenizer.bosTokenId);
    const reference = tf.tidy(() => {
      const hidden = model.forward(tf.tensor2d([ids], [1, ids.length], 'int32'), new FullAttention({ batchSize: 1, seqLen: ids.length })); // [1, T, C]
      const mean = tf.mean(tf.slice(hidden, [0, 1, 0], [1, ids.length - 1, 64]), 1); // [1, C]
      return tf.div(mean, tf.norm(mean)).dataSync() as Float32Array; // [1, C]
    });
    for (let d = 0; d < 64; d++) expect(Math.abs(batched.values[64 + d]! - reference[d]!)).toBeLessThan(1e-5);
    // identical texts embed identically; every row has unit norm
    for (let d = 0; d < 64; d++) expect(Math.abs(batched.values[d]! - batched.values[2 * 64 + d]!)).toBeLessThan(1e-6);
    for (let i = 0; i < TEXTS.length; i++) expect(cosineSimilarity(batched, i, i)).toBeCloseTo(1, 5);
    // centring keeps the identical pair at cosine 1 and spreads the rest below 0.9
    centerEmbeddings(batched);
    expect(cosineSimilarity(batched, 0, 2)).toBeCloseTo(1, 5);
    for (const [i, j] of [[0, 1], [0, 3], [0, 4], [1, 3], [1, 4], [3, 4]] as const) expect(cosineSimilarity(batched, i, j)).toBeLessThan(0.9);
  });

  it('keeps the higher-quality row of a near-identical pair and every distinct row', () => {
    const quality = [0.2, 0.5, 0.9, 0.4, 0.1];
    const rows: CurationRow[] = TEXTS.map((text, i) => ({ prompt: `q${i % 2}`, response: text, quality: quality[i] }));
    rows[2] = { ...rows[2]!, prompt: rows[0]!.prompt as string }; // rows 0 and 2: identical prompt and response
    const result = semanticDedupRows(model, tokenizer, rows, { numClusters: 2, similarity: 0.99, batchSize: 2 });
    expect(result.keptIndices).toEqual([1, 2, 3, 4]);
    expect(result.duplicates).toHaveLength(1);
    expect(result.duplicates[0]).toMatchObject({ index: 0, duplicateOf: 2 });
    expect(result.duplicates[0]!.similarity).toBeGreaterThan(0.9999);
    expect(result.assignments[0]).toBe(result.assignments[2]);
    // swap the qualities: row 0 is now the better copy and stays
    const swapped = rows.map((row, i) => ({ ...row, quality: i === 0 ? 0.9 : i === 2 ? 0.2 : quality[i] }));
    expect(semanticDedupRows(model, tokenizer, swapped, { numClusters: 2, similarity: 0.99 }).keptIndices).toEqual([0, 1, 3, 4]);
    // difficulty joins the order. Quality ranks (of 0.2, 0.5, 0.9, 0.4, 0.1): 2/5, 4/5, 1, 3/5, 1/5;
    // difficulty ranks (of 5, 2, 1, 3, 4): 1, 2/5, 1/5, 3/5, 4/5. Row 0: 2/5 · 1 = 0.4 beats row 2: 1 · 1/5 = 0.2.
    const withDifficulty = rows.map((row, i) => ({ ...row, difficulty: [5, 2, 1, 3, 4][i] }));
    expect(semanticDedupRows(model, tokenizer, withDifficulty, { numClusters: 2, similarity: 0.99 }).keptIndices).toEqual([0, 1, 3, 4]);
    // tagging: the kept rows per topic add up
    const tagged = semanticDedupRows(model, tokenizer, rows, { numClusters: 1, similarity: 0.99, numTopics: 2 });
    expect(tagged.topics!.assignments).toHaveLength(4);
    expect(tagged.topics!.topics.reduce((n, t) => n + t.numRows, 0)).toBe(4);
  });

  it('clusters with ⌈√N⌉ by default and compares only within clusters', () => {
    const embeddings = embedTexts(model, tokenizer, TEXTS, { batchSize: 8, maxTokens: 64 });
    centerEmbeddings(embeddings);
    const result = semanticDedup(embeddings, { similarity: 0.99 });
    expect(result.numClusters).toBe(3);
    expect(result.keptIndices).toEqual([0, 1, 3, 4]);
    expect(result.duplicates.map((d) => [d.index, d.duplicateOf])).toEqual([[2, 0]]);
  });
});

describe('topicMix', () => {
  it('labels clusters by class TF-IDF (hand-computed)', () => {
    const texts = ['river water flows', 'river water bank', 'the river delta', 'bake bread oven', 'bake cake oven'];
    // N = 5. Cluster 0: water 2·ln(5/2) = 1.833; bank, delta, flows 1·ln 5 = 1.609 (alphabetical);
    // river 3·ln(5/3) = 1.532. Cluster 1: bake, oven 2·ln(5/2) = 1.833; bread, cake 1.609.
    const topics = topicMix(texts, Int32Array.from([0, 0, 0, 1, 1]), 3);
    expect(topics).toEqual([
      { cluster: 0, numRows: 3, label: ['water', 'bank', 'delta'] },
      { cluster: 1, numRows: 2, label: ['bake', 'oven', 'bread'] },
      { cluster: 2, numRows: 0, label: [] },
    ]);
  });
});
