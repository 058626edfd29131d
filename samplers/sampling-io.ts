/**
 * What a sampling call takes and reports, whichever KV-cache strategy runs it: the requests (K
 * samples of a prompt), the outputs, the statistics and how their KV bytes are counted, and the
 * hooks. Shared by the paged engine (samplers/engine.ts) and the dense/none baselines
 * (samplers/baselines.ts).
 */
import type { LlamaModel } from '../src/model/llama.js';
import type { FinishReason } from './generate.js';

export const KV_CACHE_KINDS = ['paged', 'dense', 'none'] as const;
export type KVCacheKind = (typeof KV_CACHE_KINDS)[number];

/** K samples of one prompt. */
export interface SamplingRequest {
  promptIds: readonly number[];
  numSamples: number;
  /** Sample i draws from `new Rng(seed + i)`. */
  seed: number;
}

export interface SampleOutput {
  /** Generated ids; the stop token is included when one ended the sample. */
  tokenIds: number[];
  finishReason: FinishReason;
  /** Σ log p(token | context) under the model's own distribution (temperature 1, no filtering); with `returnLogprobs`, paged only. */
  logprobSum?: number;
}

export interface SamplingStats {
  kvCache: KVCacheKind;
  numRequests: number;
  numSamples: number;
  numPromptTokens: number;
  /** Prompt tokens actually run through the model (paged: once per prompt chunk, minus prefix-cache hits; dense/none: K times). */
  numPrefillTokens: number;
  numGeneratedTokens: number;
  wallSeconds: number;
  /** Generated tokens per second of wall time (prefill included in the time). */
  tokensPerSecond: number;
  /** Most sequences decoding at once. */
  peakNumSeqs: number;
  /** Most KV-cache bytes held at once: paged, used blocks × bytes per block (K and V, all layers); dense, DenseKVCache.bytes(); none, 0. */
  peakKvBytes: number;
  /**
   * Most KV bytes an ideal cache would have held at once for the same running sequences: each
   * running prompt once plus each running sample's own stored tokens, nothing padded or rounded.
   */
  idealKvBytes: number;
  /** Bytes one token's K and V take over all layers. */
  kvBytesPerToken: number;
  /** Blocks in the paged pool (0 for dense/none). */
  numBlocks: number;
  /** Fraction of prompt tokens (over prompt chunks admitted) served from the prefix cache. */
  prefixCacheHitRate: number;
  /** Scheduler steps at which a waiting prompt was held back because the KV pool was full. */
  numWaits: number;
  /** Model forward passes (prefills + decode steps). */
  numForwardPasses: number;
}

export interface SamplingResult {
  /** Per request, in request order, its samples in sample order. */
  outputs: SampleOutput[][];
  stats: SamplingStats;
}

/** One row of last-position logits, as the `onLogits` hook sees it. */
export interface LogitsEvent {
  requestIndex: number;
  sampleIndex: number;
  /** Index of the generated token these logits choose (0: the first, from the prompt). */
  step: number;
  /** [V]; a view valid only during the call (copy it to keep it). */
  logits: Float32Array;
}

export interface SamplingHooks {
  /** Every logits row that chose a kept token (tests compare cache strategies with it). */
  onLogits?: (event: LogitsEvent) => void;
  /** A request's samples are all finished (progress reporting). */
  onRequestDone?: (requestIndex: number, outputs: SampleOutput[]) => void;
}

/** Bytes DenseKVCache.bytes() reports for `numRows` rows of `numColumns` cached columns. */
export function denseKvBytes(model: LlamaModel, numRows: number, numColumns: number): number {
  return numRows * numColumns * kvBytesPerToken(model);
}

/** One token's keys and values over all layers, float32. */
export function kvBytesPerToken(model: LlamaModel): number {
  const { numLayers, numKvHeads, headDim } = model.dims;
  return 2 * numLayers * numKvHeads * headDim * Float32Array.BYTES_PER_ELEMENT;
}

/** The statistics every strategy reads off the requests, the outputs and the wall time. */
export function outputStats(
  requests: readonly SamplingRequest[],
  outputs: readonly (readonly SampleOutput[])[],
  wallSeconds: number,
): Pick<SamplingStats, 'numRequests' | 'numSamples' | 'numPromptTokens' | 'numGeneratedTokens' | 'wallSeconds' | 'tokensPerSecond'> {
  const numGeneratedTokens = outputs.flat().reduce((a, s) => a + s.tokenIds.length, 0);
  return {
    numRequests: requests.length,
    numSamples: outputs.flat().length,
    numPromptTokens: requests.reduce((a, q) => a + q.promptIds.length, 0),
    numGeneratedTokens,
    wallSeconds,
    tokensPerSecond: numGeneratedTokens / Math.max(wallSeconds, 1e-9),
  };
}
