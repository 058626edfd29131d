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
 * The scheduler (samplers/scheduler.ts) decides each forward pass — one waiting prompt's prefill
 * or one decode step of the running batch — and makes every block-table change through the KV
 * cache manager (samplers/kv/cache-manager.ts), which owns the cache statistics; the engine runs
 * the model over the paged storage, samples the tokens and reports.
 *
 * `kvCache: 'dense' | 'none'` run the baselines (samplers/baselines.ts) the paged cache is
 * checked and measured against.
 *
 * Sample i of a request draws from `new Rng(seed + i)` in every mode, and each sequence's
 * computation involves only its own rows, so results do not depend on which other prompts share
 * a batch, on `maxNumSeqs`, or on the pool size.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import type { LlamaModel } from '../src/model/llama.js';
import { sampleBaseline } from './baselines.js';
import { DecodingOptionsSchema, sampleToken, type DecodingOptions } from './decoding.js';
import { KVCacheManager } from './kv/cache-manager.js';
import { PagedKVStorage } from './kv/kv-storage.js';
import { type DecodeRow, PagedDecodeAttention, PagedPrefillAttention, type PagedKVCache } from './paged-attention.js';
import { KV_CACHE_KINDS, kvBytesPerToken, outputStats, type SampleOutput, type SamplingHooks, type SamplingRequest, type SamplingResult } from './sampling-io.js';
import { type ScheduledDecode, type ScheduledPrefill, Scheduler, type Sequence } from './scheduler.js';

export { denseKvBytes, KV_CACHE_KINDS, kvBytesPerToken } from './sampling-io.js';
export type { KVCacheKind, LogitsEvent, SampleOutput, SamplingHooks, SamplingRequest, SamplingResult, SamplingStats } from './sampling-io.js';

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

/** One paged `generate` call in progress: its scheduler and what it reports. */
interface PagedRun {
  scheduler: Scheduler;
  decoding: DecodingOptions;
  stopTokenIds: ReadonlySet<number>;
  hooks: SamplingHooks;
  /** Per request, its samples in sample order, filled as they finish. */
  outputs: SampleOutput[][];
  /** Per request, samples not finished yet. */
  numUnfinished: number[];
  numForwardPasses: number;
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
    return this.cache ? this.generatePaged(this.cache, requests, decoding, hooks) : sampleBaseline(this.model, requests, decoding, this.options.kvCache as 'dense' | 'none', hooks);
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

  /** paged: runs the scheduler's steps until every request's samples are finished. */
  private generatePaged(cache: PagedKVCache, requests: readonly SamplingRequest[], decoding: DecodingOptions, hooks: SamplingHooks): SamplingResult {
    const { manager, storage } = cache;
    const start = performance.now();
    const cacheBefore = manager.stats();
    manager.resetPeakUsedBlocks();
    const scheduler = new Scheduler(manager, { maxNumSeqs: this.options.maxNumSeqs, maxNewTokens: decoding.maxNewTokens, newSeqId: () => this.nextSeqId++ });
    requests.forEach((request, r) => scheduler.addRequest(r, request));
    const run: PagedRun = {
      scheduler,
      decoding,
      stopTokenIds: new Set(decoding.stopTokenIds),
      hooks,
      outputs: requests.map((q) => new Array<SampleOutput>(q.numSamples)),
      numUnfinished: requests.map((q) => q.numSamples),
      numForwardPasses: 0,
    };
    while (scheduler.hasUnfinished()) this.step(cache, run);

    const cacheStats = manager.stats();
    const numPromptTokensAdmitted = cacheStats.numPromptTokens - cacheBefore.numPromptTokens;
    const numCachedTokens = cacheStats.numCachedPromptTokens - cacheBefore.numCachedPromptTokens;
    const { numWaits, peakNumSeqs, peakIdealTokens } = scheduler.stats();
    const bytesPerToken = kvBytesPerToken(this.model);
    return {
      outputs: run.outputs,
      stats: {
        kvCache: 'paged',
        ...outputStats(requests, run.outputs, (performance.now() - start) / 1000),
        numPrefillTokens: numPromptTokensAdmitted - numCachedTokens,
        peakNumSeqs,
        peakKvBytes: storage.bytesInUse(cacheStats.peakUsedBlocks),
        idealKvBytes: peakIdealTokens * bytesPerToken,
        kvBytesPerToken: bytesPerToken,
        numBlocks: manager.numBlocks,
        prefixCacheHitRate: numPromptTokensAdmitted === 0 ? 0 : numCachedTokens / numPromptTokensAdmitted,
        numWaits,
        numForwardPasses: run.numForwardPasses,
      },
    };
  }

  /** One forward pass, the one the scheduler picks: a waiting prompt's prefill, or a decode step of the running batch. */
  private step(cache: PagedKVCache, run: PagedRun): void {
    const scheduled = run.scheduler.schedule();
    if (scheduled.kind === 'prefill') this.prefill(cache, run, scheduled);
    else this.decode(cache, run, scheduled);
    run.numForwardPasses++;
  }

  /** Computes the prompt's uncached positions once, forks it into its samples and samples their first tokens. */
  private prefill(cache: PagedKVCache, run: PagedRun, prefill: ScheduledPrefill): void {
    const { promptIds } = prefill.request;
    const numNew = promptIds.length - prefill.numCachedTokens;
    const context = new PagedPrefillAttention(cache, prefill.seqId, prefill.numCachedTokens, numNew);
    const logits = this.lastLogits(promptIds.slice(prefill.numCachedTokens), [1, numNew], context);
    for (const seq of run.scheduler.forkSamples(prefill)) this.sampleNext(run, seq, logits);
  }

  /** Feeds every running sequence its last token and samples the next. */
  private decode(cache: PagedKVCache, run: PagedRun, decode: ScheduledDecode): void {
    cache.storage.copyBlocks(decode.copies); // copy-on-write before any layer writes the new tokens
    const prefixLength = (seq: Sequence) => (this.options.cascadeAttention ? seq.group.promptIds.length : 0);
    const rows: DecodeRow[] = decode.sequences.map((seq) => ({ seqId: seq.seqId, prefixKey: seq.group.id, prefixLength: prefixLength(seq) }));
    const inputIds = decode.sequences.map((seq) => seq.tokenIds[seq.tokenIds.length - 1]!);
    const logits = this.lastLogits(inputIds, [decode.sequences.length, 1], new PagedDecodeAttention(cache, rows));
    run.scheduler.cacheFilledBlocks(decode);
    const v = this.model.dims.vocabSize;
    decode.sequences.forEach((seq, i) => this.sampleNext(run, seq, logits.subarray(i * v, (i + 1) * v)));
  }

  /** Samples the next token of `seq` from its logits row; a finished sequence reports its output and leaves the scheduler. */
  private sampleNext(run: PagedRun, seq: Sequence, logits: Float32Array): void {
    const { requestIndex } = seq.group;
    run.hooks.onLogits?.({ requestIndex, sampleIndex: seq.sampleIndex, step: seq.tokenIds.length, logits });
    const token = sampleToken(logits, run.decoding, seq.rng);
    if (this.options.returnLogprobs) seq.logprobSum += logProbability(logits, token);
    seq.tokenIds.push(token);
    const finishReason = run.stopTokenIds.has(token) ? 'stop' : seq.tokenIds.length >= run.decoding.maxNewTokens ? 'length' : null;
    if (finishReason === null) return;
    const output: SampleOutput = { tokenIds: seq.tokenIds, finishReason };
    if (this.options.returnLogprobs) output.logprobSum = seq.logprobSum;
    run.outputs[requestIndex]![seq.sampleIndex] = output;
    run.scheduler.finish(seq);
    if (--run.numUnfinished[requestIndex]! === 0) run.hooks.onRequestDone?.(requestIndex, run.outputs[requestIndex]!);
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
