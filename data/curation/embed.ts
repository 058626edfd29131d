/**
 * Text embeddings from a tfalign checkpoint: the mean of the final-norm hidden states over a
 * text's tokens, L2-normalised, so that a dot product is a cosine similarity.
 *
 * A text is encoded as plain text (no chat template: its constant header tokens would pull every
 * embedding towards the same point) with the tokenizer's BOS in front, as the model saw documents
 * in pretraining, and cut to `maxTokens`. The BOS state is the same for every text, so it is left
 * out of the mean (an empty text, BOS alone, is embedded as that state). Rows are batched by
 * length, right-padded with segment id 0 (no real token attends to padding; positions start at 0
 * for every row), so an embedding does not depend on the batch it was computed in.
 *
 * `centerEmbeddings` subtracts the mean embedding of a set and normalises again: decoder hidden
 * states share a large common direction (anisotropy; Ethayarajh, EMNLP 2019), under which even
 * unrelated texts have cosine near 1 and a similarity threshold separates little. Centering keeps
 * identical texts identical and spreads the rest.
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from '../../src/model/llama.js';
import { FullAttention } from '../../src/model/attention.js';
import type { Tokenizer } from '../../src/tokenizer/tokenizer.js';

export interface EmbedOptions {
  /** Texts per forward pass. */
  batchSize: number;
  /** Most tokens per text, BOS included (longer texts keep their beginning); at most the model's context. */
  maxTokens: number;
  /** How errors name text `index` (e.g. `data.jsonl:7`); default `texts[index]`. */
  describeRow?: (index: number) => string;
}

/** Embeddings of many texts: row-major [numTexts, dim], each row of unit L2 norm. */
export interface Embeddings {
  values: Float32Array;
  dim: number;
}

/** Token ids of `text` for embedding: BOS (when the tokenizer has one) then the text, cut to maxTokens. */
export function embeddingTokenIds(tokenizer: Tokenizer, text: string, maxTokens: number): number[] {
  const bos = tokenizer.bosTokenId;
  const ids = bos === undefined ? [] : [bos];
  for (const id of tokenizer.encode(text)) {
    if (ids.length >= maxTokens) break;
    ids.push(id);
  }
  if (ids.length === 0) ids.push(tokenizer.eotTokenId ?? 0); // an empty text without BOS: one end token
  return ids;
}

/** Scales each row of `values` ([n, dim]) to unit L2 norm in place; an all-zero row stays zero. */
export function normalizeRows(values: Float32Array, dim: number): void {
  for (let offset = 0; offset < values.length; offset += dim) {
    let sumSquares = 0;
    for (let d = 0; d < dim; d++) sumSquares += values[offset + d]! * values[offset + d]!;
    const norm = Math.sqrt(sumSquares);
    if (norm === 0) continue;
    for (let d = 0; d < dim; d++) values[offset + d] = values[offset + d]! / norm;
  }
}

/** Subtracts the mean row and renormalises, in place (module doc). */
export function centerEmbeddings(embeddings: Embeddings): void {
  const { values, dim } = embeddings;
  const numRows = values.length / dim;
  if (numRows === 0) return;
  const mean = new Float64Array(dim);
  for (let offset = 0; offset < values.length; offset += dim) for (let d = 0; d < dim; d++) mean[d] += values[offset + d]!;
  for (let d = 0; d < dim; d++) mean[d] = mean[d]! / numRows;
  for (let offset = 0; offset < values.length; offset += dim) for (let d = 0; d < dim; d++) values[offset + d] = values[offset + d]! - mean[d]!;
  normalizeRows(values, dim);
}

/** Cosine similarity of rows i and j of unit-norm embeddings (their dot product). */
export function cosineSimilarity(embeddings: Embeddings, i: number, j: number): number {
  const { values, dim } = embeddings;
  let dot = 0;
  for (let d = 0; d < dim; d++) dot += values[i * dim + d]! * values[j * dim + d]!;
  return dot;
}

/**
 * Mean-pooled, L2-normalised final hidden states of `model` for each text (module doc), in input
 * order; `onBatch` reports progress after each forward pass.
 */
export function embedTexts(
  model: LlamaModel,
  tokenizer: Tokenizer,
  texts: readonly string[],
  opts: EmbedOptions,
  onBatch?: (numDone: number, numTotal: number) => void,
): Embeddings {
  if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`embed: batchSize must be a positive integer, got ${opts.batchSize}`);
  const maxTokens = Math.min(opts.maxTokens, model.dims.maxPositions);
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new Error(`embed: maxTokens must be a positive integer, got ${opts.maxTokens}`);
  const dim = model.dims.hiddenSize;
  const describeRow = opts.describeRow ?? ((i: number) => `texts[${i}]`);
  const sequences = texts.map((text, i) => {
    const ids = embeddingTokenIds(tokenizer, text, maxTokens);
    const bad = ids.find((id) => id >= model.dims.vocabSize);
    if (bad !== undefined) throw new Error(`${describeRow(i)}: token id ${bad} is not below the model's vocabulary size ${model.dims.vocabSize} (tokenizer and model disagree)`);
    return ids;
  });
  const values = new Float32Array(texts.length * dim);
  const order = sequences.map((ids, i) => ({ i, len: ids.length })).sort((a, b) => a.len - b.len || a.i - b.i).map((x) => x.i);
  for (let start = 0; start < order.length; start += opts.batchSize) {
    const indices = order.slice(start, start + opts.batchSize);
    const numRows = indices.length;
    const seqLen = Math.max(...indices.map((i) => sequences[i]!.length));
    const inputIds = new Int32Array(numRows * seqLen);
    const segmentIds = new Int32Array(numRows * seqLen);
    const poolWeights = new Float32Array(numRows * seqLen);
    indices.forEach((i, r) => {
      const ids = sequences[i]!;
      const skipFirst = ids.length > 1 && ids[0] === tokenizer.bosTokenId; // BOS only pooled when alone
      ids.forEach((id, t) => {
        inputIds[r * seqLen + t] = id;
        segmentIds[r * seqLen + t] = 1;
        poolWeights[r * seqLen + t] = skipFirst && t === 0 ? 0 : 1;
      });
    });
    const pooled = tf.tidy(() => {
      const ctx = new FullAttention({ batchSize: numRows, seqLen, segmentIds });
      const hidden = model.forward(tf.tensor2d(inputIds, [numRows, seqLen], 'int32'), ctx); // [B, T, C]
      const weights = tf.tensor3d(poolWeights, [numRows, seqLen, 1]); // [B, T, 1]
      const sums = tf.sum(tf.mul(hidden, weights), 1); // [B, C]
      const means = tf.div(sums, tf.sum(weights, 1)); // [B, C]
      const norms = tf.maximum(tf.norm(means, 'euclidean', 1, true), 1e-12); // [B, 1]
      return tf.div(means, norms).dataSync() as Float32Array; // [B, C] flattened
    });
    indices.forEach((i, r) => values.set(pooled.subarray(r * dim, (r + 1) * dim), i * dim));
    onBatch?.(Math.min(start + opts.batchSize, order.length), order.length);
  }
  return { values, dim };
}
