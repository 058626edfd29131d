/**
 * The sampling engine: K samples of each of many prompts, the compute-hungry step of rejection
 * sampling (Llama 3 used PagedAttention there for more than 2× throughput, arXiv 2407.21783 §4.2.2).
 *
 * `kvCache: 'paged'` (the default) is the engine proper:
 * - each prompt is prefilled ONCE into the paged cache (samplers/kv), then forked into its K
 *   samples, which share the prompt's blocks (copy-on-write on the partly filled last block);
 * - continuous batching (Orca, Yu et al. 2022; vLLM): the samples of several prompts decode
 *   together, one token each per forward; finished sequences free their blocks and waiting
 *   prompts join between steps;
 * - cascade attention over the shared prompt (samplers/paged-attention.ts);
 * - a prefix cache across prompts with a common beginning (system prompt, few-shot examples).
 *   It holds K/V of the current weights: call `resetPrefixCache()` whenever the weights change
 *   (every round of the iterative loop), or build a new engine.
 *
 * Admission never over-commits the pool: a prompt joins only when the free blocks cover its
 * prompt blocks, the most its samples can grow to (prompt + maxNewTokens − 1 stored tokens) and
 * the most every running sequence can still grow to. Decoding therefore never runs out of
 * blocks; when the pool is full, prompts wait for running sequences to finish (counted in
 * `numWaits`). A request whose K samples do not all fit (maxNumSeqs, or the pool) is split:
 * the later chunks find the prompt's full blocks in the prefix cache and recompute only the rest.
 *
 * `kvCache: 'dense' | 'none'` run samplers/generate.ts prompt by prompt (the prompt repeated K
 * times, as Hugging Face's `generate(num_return_sequences=K)`): the baselines the paged cache is
 * checked and measured against.
 *
 * Sample i of a request draws from `new Rng(seed + i)` in every mode, and each sequence's
 * computation involves only its own rows, so results do not depend on which other prompts share
 * a batch, on `maxNumSeqs`, or on the pool size.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import type { LlamaModel } from '../src/model/llama.js';
import { Rng } from '../src/util/rng.js';
import { DecodingOptionsSchema, sampleToken, type DecodingOptions } from './decoding.js';
import { generate as generateBaseline, type FinishReason } from './generate.js';
import { type BlockCopy, KVCacheManager } from './kv/block-table.js';
import { PagedKVStorage } from './kv/kv-storage.js';
import { KV_CACHE_KINDS, type KVCacheKind } from './kv-cache-kinds.js';
import { type DecodeRow, PagedDecodeAttention, PagedPrefillAttention, type PagedKVCache } from './paged-attention.js';

export { KV_CACHE_KINDS, type KVCacheKind };

const MIB = 1024 * 1024;

export const SamplingEngineOptionsSchema = z
  .object({
    kvCache: z
      .enum(KV_CACHE_KINDS)
      .default('paged')
      .describe('paged: prompt prefilled once, shared by its K samples (default). dense: per-sample contiguous cache, prompt stored K times (HF). none: recompute everything each step.'),
    blockSize: z.number().int().positive().default(16).describe('Tokens per KV block (paged). 16 as in vLLM.'),
    numBlocks: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('Blocks in the paged pool; default: as many as kvCacheBytes holds, capped at what maxNumSeqs sequences of maxPositions tokens could use.'),
    kvCacheBytes: z
      .number()
      .int()
      .positive()
      .default(256 * MIB)
      .describe('Memory budget of the paged pool (keys and values, all layers) when numBlocks is not given. Default 256 MiB.'),
    maxNumSeqs: z
      .number()
      .int()
      .positive()
      .default(128)
      .describe('Most sequences decoding at once (paged): 8 prompts × K = 16 by default.'),
    enablePrefixCaching: z.boolean().default(true).describe('Reuse cached full blocks across prompts with a common beginning (paged).'),
    cascadeAttention: z
      .boolean()
      .default(true)
      .describe("Attend to a prompt's shared prefix once for all its samples (paged); false reads each sample's blocks separately (for checking)."),
    returnLogprobs: z
      .boolean()
      .default(false)
      .describe('Report logprobSum per sample: Σ log p(token) under the unmodified model distribution (paged only).'),
  })
  .strict();

export type SamplingEngineOptions = z.input<typeof SamplingEngineOptionsSchema> & {
  /** The causal LM to sample from. */
  model: LlamaModel;
};

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

interface Group {
  id: number;
  requestIndex: number;
  promptIds: readonly number[];
}

interface Sequence {
  seqId: number;
  group: Group;
  sampleIndex: number;
  rng: Rng;
  tokenIds: number[];
  logprobSum: number;
}

/** Log-probability of `token` under softmax(logits). */
function logProbability(logits: Float32Array, token: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return logits[token]! - max - Math.log(sum);
}

export class SamplingEngine {
  readonly model: LlamaModel;
  readonly options: z.infer<typeof SamplingEngineOptionsSchema>;
  /** The paged cache (kvCache 'paged'); persists across `generate` calls with its prefix cache. */
  readonly cache: PagedKVCache | undefined;
  private nextSeqId = 0;

  constructor(options: SamplingEngineOptions) {
    const { model, ...rest } = options;
    const parsed = SamplingEngineOptionsSchema.safeParse(rest);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new Error(`samplers/engine: options: ${issue.path.join('.') || '(options)'}: ${issue.message}`);
    }
    if (model.dims.isRewardModel) throw new Error('samplers/engine: options: model: a reward model cannot generate; give a causal LM');
    this.model = model;
    this.options = parsed.data;
    if (this.options.kvCache === 'paged') {
      const { numLayers, numKvHeads, headDim, maxPositions } = model.dims;
      const { blockSize, maxNumSeqs, kvCacheBytes } = this.options;
      const bytesPerBlock = blockSize * kvBytesPerToken(model);
      const numBlocks =
        this.options.numBlocks ?? Math.max(1, Math.min(Math.floor(kvCacheBytes / bytesPerBlock), maxNumSeqs * Math.ceil(maxPositions / blockSize)));
      this.cache = {
        manager: new KVCacheManager({ numBlocks, blockSize, enablePrefixCaching: this.options.enablePrefixCaching }),
        storage: new PagedKVStorage({ numLayers, numBlocks, blockSize, numKvHeads, headDim }),
      };
    }
  }

  /** Empties the prefix cache. Call it whenever the model's weights change (its cached K/V belong to the old weights). */
  resetPrefixCache(): void {
    this.cache?.manager.resetPrefixCache();
  }

  /** K samples of every request, in request order. */
  generate(requests: readonly SamplingRequest[], decodingInput: z.input<typeof DecodingOptionsSchema>, hooks: SamplingHooks = {}): SamplingResult {
    const decoding = DecodingOptionsSchema.parse(decodingInput);
    this.checkRequests(requests, decoding);
    return this.cache ? this.generatePaged(this.cache, requests, decoding, hooks) : this.generateBaseline(requests, decoding, hooks);
  }

  private checkRequests(requests: readonly SamplingRequest[], decoding: DecodingOptions): void {
    const { vocabSize, maxPositions } = this.model.dims;
    requests.forEach((request, r) => {
      const where = `samplers/engine: requests[${r}]`;
      if (request.promptIds.length === 0) throw new Error(`${where}.promptIds: empty prompt`);
      request.promptIds.forEach((id, i) => {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new Error(`${where}.promptIds[${i}]: ${id} is outside the vocabulary [0, ${vocabSize})`);
      });
      if (!Number.isInteger(request.numSamples) || request.numSamples < 1) throw new Error(`${where}.numSamples: ${request.numSamples} must be a positive integer`);
      if (!Number.isSafeInteger(request.seed)) throw new Error(`${where}.seed: ${request.seed} must be a safe integer`);
      if (request.promptIds.length + decoding.maxNewTokens > maxPositions) {
        throw new Error(`${where}: prompt (${request.promptIds.length} tokens) + max new tokens (${decoding.maxNewTokens}) exceeds the context of ${maxPositions}`);
      }
    });
  }

  /** dense / none: samplers/generate.ts one request at a time (its K rows are the batch). */
  private generateBaseline(requests: readonly SamplingRequest[], decoding: DecodingOptions, hooks: SamplingHooks): SamplingResult {
    const kind = this.options.kvCache as 'dense' | 'none';
    const bytesPerToken = kvBytesPerToken(this.model);
    const v = this.model.dims.vocabSize;
    const start = performance.now();
    const outputs: SampleOutput[][] = [];
    let peakKvBytes = 0;
    let idealKvBytes = 0;
    let numForwardPasses = 0;
    let numPrefillTokens = 0;
    for (let r = 0; r < requests.length; r++) {
      const { promptIds, numSamples, seed } = requests[r]!;
      let numSteps = 0;
      const kept: Float32Array[] = [];
      const sequences = generateBaseline(this.model, [...promptIds], {
        numSamples,
        decoding,
        seed,
        kvCache: kind,
        onLogits: (_step, logits) => {
          numSteps++;
          if (hooks.onLogits) kept.push(Float32Array.from(logits));
        },
      });
      numForwardPasses += numSteps;
      numPrefillTokens += numSamples * promptIds.length;
      // The dense cache holds K rows of (prompt + one column per decode step) after the last forward.
      if (kind === 'dense') peakKvBytes = Math.max(peakKvBytes, denseKvBytes(this.model, numSamples, promptIds.length + numSteps - 1));
      const storedSuffixTokens = sequences.reduce((a, s) => a + s.tokenIds.length - 1, 0);
      idealKvBytes = Math.max(idealKvBytes, (promptIds.length + storedSuffixTokens) * bytesPerToken);
      if (hooks.onLogits) {
        sequences.forEach((seq, i) => {
          for (let step = 0; step < seq.tokenIds.length; step++) {
            hooks.onLogits!({ requestIndex: r, sampleIndex: i, step, logits: kept[step]!.subarray(i * v, (i + 1) * v) });
          }
        });
      }
      const requestOutputs = sequences.map((s) => ({ tokenIds: s.tokenIds, finishReason: s.finishReason }));
      outputs.push(requestOutputs);
      hooks.onRequestDone?.(r, requestOutputs);
    }
    const wallSeconds = (performance.now() - start) / 1000;
    const numGeneratedTokens = outputs.flat().reduce((a, s) => a + s.tokenIds.length, 0);
    return {
      outputs,
      stats: {
        kvCache: kind,
        numRequests: requests.length,
        numSamples: outputs.flat().length,
        numPromptTokens: requests.reduce((a, q) => a + q.promptIds.length, 0),
        numPrefillTokens,
        numGeneratedTokens,
        wallSeconds,
        tokensPerSecond: numGeneratedTokens / Math.max(wallSeconds, 1e-9),
        peakNumSeqs: Math.max(0, ...requests.map((q) => q.numSamples)),
        peakKvBytes,
        idealKvBytes,
        kvBytesPerToken: bytesPerToken,
        numBlocks: 0,
        prefixCacheHitRate: 0,
        numWaits: 0,
        numForwardPasses,
      },
    };
  }

  private generatePaged(cache: PagedKVCache, requests: readonly SamplingRequest[], decoding: DecodingOptions, hooks: SamplingHooks): SamplingResult {
    const { manager, storage } = cache;
    const { maxNumSeqs, cascadeAttention, returnLogprobs } = this.options;
    const blockSize = manager.blockSize;
    const bytesPerToken = kvBytesPerToken(this.model);
    const { maxNewTokens, stopTokenIds } = decoding;
    const stop = new Set(stopTokenIds);
    const start = performance.now();

    const outputs: SampleOutput[][] = requests.map((q) => new Array<SampleOutput>(q.numSamples));
    const numUnfinished = requests.map((q) => q.numSamples);
    /** Requests (or their remainders) not admitted yet, in request order. */
    const waiting = requests.map((_, r) => ({ requestIndex: r, nextSample: 0 }));
    let running: Sequence[] = [];
    let nextGroupId = 0;
    const stats = { numPrefillTokens: 0, numPromptTokensAdmitted: 0, numCachedTokens: 0, numWaits: 0, numForwardPasses: 0, peakNumSeqs: 0, peakUsedBlocks: 0, peakIdealTokens: 0 };

    /** Blocks a sequence's table can reach: positions [0, prompt + maxNewTokens − 1) are the most ever stored. */
    const maxTableBlocks = (promptLength: number) => Math.ceil((promptLength + maxNewTokens - 1) / blockSize);
    /** Blocks a running sequence may still take: growth of its table, plus a copy of a shared partial last block. */
    const futureBlocks = (seq: Sequence): number => {
      const table = manager.blockTable(seq.seqId);
      const numTokens = manager.numTokens(seq.seqId);
      const sharedPartial = numTokens % blockSize !== 0 && manager.blockPool.refCount(table[table.length - 1]!) > 1 ? 1 : 0;
      return maxTableBlocks(seq.group.promptIds.length) - table.length + sharedPartial;
    };
    const recordPeaks = () => {
      stats.peakNumSeqs = Math.max(stats.peakNumSeqs, running.length);
      stats.peakUsedBlocks = Math.max(stats.peakUsedBlocks, manager.numBlocks - manager.blockPool.numFreeBlocks);
      // Ideal: each running prompt once, plus each running sample's own stored tokens.
      const groups = new Set<Group>();
      let idealTokens = 0;
      for (const seq of running) {
        if (!groups.has(seq.group)) {
          groups.add(seq.group);
          idealTokens += seq.group.promptIds.length;
        }
        idealTokens += manager.numTokens(seq.seqId) - seq.group.promptIds.length;
      }
      stats.peakIdealTokens = Math.max(stats.peakIdealTokens, idealTokens);
    };
    const finish = (seq: Sequence, finishReason: FinishReason) => {
      const output: SampleOutput = { tokenIds: seq.tokenIds, finishReason };
      if (returnLogprobs) output.logprobSum = seq.logprobSum;
      outputs[seq.group.requestIndex]![seq.sampleIndex] = output;
      manager.free(seq.seqId);
      if (--numUnfinished[seq.group.requestIndex]! === 0) hooks.onRequestDone?.(seq.group.requestIndex, outputs[seq.group.requestIndex]!);
    };
    /** Samples the next token of `seq` from its logits row; returns false when the sequence is finished (and freed). */
    const advance = (seq: Sequence, logits: Float32Array): boolean => {
      hooks.onLogits?.({ requestIndex: seq.group.requestIndex, sampleIndex: seq.sampleIndex, step: seq.tokenIds.length, logits });
      const token = sampleToken(logits, decoding, seq.rng);
      if (returnLogprobs) seq.logprobSum += logProbability(logits, token);
      seq.tokenIds.push(token);
      if (stop.has(token)) finish(seq, 'stop');
      else if (seq.tokenIds.length >= maxNewTokens) finish(seq, 'length');
      else return true;
      return false;
    };

    /** Prefills as many waiting prompts as seats and blocks allow; counts a wait when the pool holds one back. */
    const admit = () => {
      let headroom = manager.blockPool.numFreeBlocks - running.reduce((a, seq) => a + futureBlocks(seq), 0);
      while (waiting.length > 0 && running.length < maxNumSeqs) {
        const entry = waiting[0]!;
        const request = requests[entry.requestIndex]!;
        const promptLength = request.promptIds.length;
        const promptBlocks = Math.ceil(promptLength / blockSize);
        // Each fork needs at least one block (its first append), whatever maxNewTokens.
        const blocksPerSample = Math.max(1, maxTableBlocks(promptLength) - Math.floor(promptLength / blockSize));
        const numFitting = Math.floor((headroom - promptBlocks) / blocksPerSample);
        const numSamples = Math.min(request.numSamples - entry.nextSample, maxNumSeqs - running.length, numFitting);
        if (numSamples < 1) {
          if (running.length === 0) {
            throw new Error(
              `samplers/engine: requests[${entry.requestIndex}]: one sample needs ${promptBlocks + blocksPerSample} KV blocks but the pool has ${manager.numBlocks}; raise numBlocks/kvCacheBytes or lower maxNewTokens`,
            );
          }
          stats.numWaits++;
          return;
        }
        prefill(entry.requestIndex, entry.nextSample, numSamples);
        headroom -= promptBlocks + numSamples * blocksPerSample;
        entry.nextSample += numSamples;
        if (entry.nextSample === request.numSamples) waiting.shift();
      }
    };

    /** Prefills one prompt once, forks it into samples [firstSample, firstSample + numSamples) and samples their first tokens. */
    const prefill = (requestIndex: number, firstSample: number, numSamples: number) => {
      const request = requests[requestIndex]!;
      const promptIds = request.promptIds;
      const parentId = this.nextSeqId++;
      const allocation = manager.allocatePrompt(parentId, promptIds);
      if (allocation === null) throw new Error('samplers/engine: internal error: admission control let in a prompt the pool cannot hold');
      const numCached = allocation.numCachedTokens;
      stats.numPromptTokensAdmitted += promptIds.length;
      stats.numCachedTokens += numCached;
      stats.numPrefillTokens += promptIds.length - numCached;
      const logits = this.lastLogits(promptIds.slice(numCached), [1, promptIds.length - numCached], new PagedPrefillAttention(cache, parentId, numCached, promptIds.length - numCached));
      stats.numForwardPasses++;
      manager.cacheFullBlocks(parentId, promptIds);
      const group: Group = { id: nextGroupId++, requestIndex, promptIds };
      const children: Sequence[] = [];
      for (let i = 0; i < numSamples; i++) {
        const sampleIndex = firstSample + i;
        children.push({ seqId: this.nextSeqId++, group, sampleIndex, rng: new Rng(request.seed + sampleIndex), tokenIds: [], logprobSum: 0 });
      }
      if (!manager.fork(parentId, children.map((c) => c.seqId))) throw new Error('samplers/engine: internal error: admission control let in more samples than free blocks');
      manager.free(parentId);
      running.push(...children);
      recordPeaks();
      const finished = new Set(children.filter((child) => !advance(child, logits)));
      if (finished.size > 0) running = running.filter((seq) => !finished.has(seq));
    };

    /** One token for every running sequence. */
    const decodeStep = () => {
      const copies: BlockCopy[] = [];
      for (const seq of running) {
        const appended = manager.appendSlots(seq.seqId, 1);
        if (appended === null) throw new Error('samplers/engine: internal error: admission control left a running sequence without a block');
        copies.push(...appended.copies);
      }
      storage.copyBlocks(copies); // copy-on-write before any layer writes the new tokens
      recordPeaks();
      const rows: DecodeRow[] = running.map((seq) => ({ seqId: seq.seqId, prefixKey: seq.group.id, prefixLength: cascadeAttention ? seq.group.promptIds.length : 0 }));
      const inputIds = running.map((seq) => seq.tokenIds[seq.tokenIds.length - 1]!);
      const logits = this.lastLogits(inputIds, [running.length, 1], new PagedDecodeAttention(cache, rows));
      stats.numForwardPasses++;
      const v = this.model.dims.vocabSize;
      const stillRunning: Sequence[] = [];
      running.forEach((seq, i) => {
        const numStored = manager.numTokens(seq.seqId);
        if (numStored % blockSize === 0) manager.cacheFullBlocks(seq.seqId, [...seq.group.promptIds, ...seq.tokenIds].slice(0, numStored));
        if (advance(seq, logits.subarray(i * v, (i + 1) * v))) stillRunning.push(seq);
      });
      running = stillRunning;
    };

    while (waiting.length > 0 || running.length > 0) {
      admit();
      if (running.length > 0) decodeStep();
    }

    const wallSeconds = (performance.now() - start) / 1000;
    const numGeneratedTokens = outputs.flat().reduce((a, s) => a + s.tokenIds.length, 0);
    return {
      outputs,
      stats: {
        kvCache: 'paged',
        numRequests: requests.length,
        numSamples: outputs.flat().length,
        numPromptTokens: requests.reduce((a, q) => a + q.promptIds.length, 0),
        numPrefillTokens: stats.numPrefillTokens,
        numGeneratedTokens,
        wallSeconds,
        tokensPerSecond: numGeneratedTokens / Math.max(wallSeconds, 1e-9),
        peakNumSeqs: stats.peakNumSeqs,
        peakKvBytes: storage.bytesInUse(stats.peakUsedBlocks),
        idealKvBytes: stats.peakIdealTokens * bytesPerToken,
        kvBytesPerToken: bytesPerToken,
        numBlocks: manager.numBlocks,
        prefixCacheHitRate: stats.numPromptTokensAdmitted === 0 ? 0 : stats.numCachedTokens / stats.numPromptTokensAdmitted,
        numWaits: stats.numWaits,
        numForwardPasses: stats.numForwardPasses,
      },
    };
  }

  /** Last-position logits [B·V] of a forward over `ids` (shape [B, T]) in `ctx`. */
  private lastLogits(ids: readonly number[], shape: [number, number], ctx: PagedPrefillAttention | PagedDecodeAttention): Float32Array {
    const logits = tf.tidy(() => {
      const [b, t] = shape;
      const hidden = this.model.forward(tf.tensor2d(Int32Array.from(ids), shape, 'int32'), ctx); // [B, T, C]
      const last = tf.slice(hidden, [0, t - 1, 0], [b, 1, hidden.shape[2]]); // [B, 1, C]
      return this.model.logits(last); // [B, 1, V]
    });
    // Read outside the tidy: a tidy walks every element of a typed array it returns (seconds at B·V = 10⁶).
    const values = logits.dataSync() as Float32Array;
    logits.dispose();
    return values;
  }
}
