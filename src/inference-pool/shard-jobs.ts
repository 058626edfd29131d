/**
 * The row-parallel jobs a `ShardPool` worker runs over its share of rows: `sample` (K samples per
 * prompt, `samplePolicy`), `score` (reward-model scores, `scoreResponses`) and `logprobs`
 * (response token log-probs, `responseLogprobs`). Each is the one-thread function applied to a
 * contiguous slice of the rows, so the pool's results, laid end to end, are the one-thread
 * results:
 *   - rows are independent in all three (batching, padding and which prompts decode together
 *     change no row's values; see `samplers/engine.ts` and `reward-scoring.ts`);
 *   - sampling seeds are global: sample i of prompt j uses `seed + j·K + i` for the prompt's
 *     index j in the whole input, so a shard starting at prompt s runs `samplePolicy` with
 *     seed + s·K (its local prompt j' is global s + j');
 *   - errors name rows by their global label (`labels`, or the one-thread default with the
 *     global index), so a bad row reads the same whichever worker met it.
 * Everything here is plain data (structured clone) except the model and tokenizer a worker loads.
 */
import type { LlamaModel } from '../model/llama.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { Conversation } from '../../data/rows.js';
import type { SamplingStats } from '../../samplers/engine.js';
import { samplePolicy, type PolicySamples, type PolicySamplingOptions } from '../../samplers/policy-sampler.js';
import { scoreResponses, type ScoreInput } from '../inference/reward-scoring.js';
import { responseLogprobs, type PromptResponseIds } from '../inference/token-logprobs.js';

/**
 * What `sample` needs besides the prompts: `PolicySamplingOptions` without its callbacks. Sample i
 * of prompt j (global index) uses seed + j·K + i; each worker has its own KV pool.
 */
export type SampleJobOptions = Omit<PolicySamplingOptions, 'describePrompt' | 'onPromptDone'>;

export interface ScoreJobOptions {
  /** Sequences per forward pass. */
  batchSize: number;
  chat?: boolean;
  /** Match special-token strings in the texts as control tokens (default: plain text). */
  parseSpecialTokens?: boolean;
}

export interface LogprobsJobOptions {
  /** Rows per forward pass. */
  batchSize: number;
  padId: number;
}

/** Each job kind: its options, one input row, and a shard's result. */
export interface ShardJobTypes {
  sample: { options: SampleJobOptions; row: Conversation; result: PolicySamples };
  score: { options: ScoreJobOptions; row: ScoreInput; result: number[] };
  logprobs: { options: LogprobsJobOptions; row: PromptResponseIds; result: Float32Array[] };
}

export type ShardJobKind = keyof ShardJobTypes;

/** One shard of a job, as sent to a worker. */
export interface ShardRequest<K extends ShardJobKind = ShardJobKind> {
  kind: K;
  /** Model folder the worker loads (kept loaded until a request names another folder). */
  modelDir: string;
  /** Tokenizer folder (sample, score); default `modelDir`. */
  tokenizerDir?: string;
  options: ShardJobTypes[K]['options'];
  rows: ShardJobTypes[K]['row'][];
  /** Global index of `rows[0]` in the whole input. */
  firstIndex: number;
  /** How errors name each row of this shard (e.g. `prompts.jsonl:12`); default by global index. */
  labels?: string[];
}

/** `workerData` of a shard worker. */
export interface ShardWorkerInit {
  /** This worker's index in the pool (0-based). */
  index: number;
  backend: 'tensorflow' | 'wasm' | 'cpu';
}

/** What a job runs on: the loaded model, its tokenizer, and where progress goes. */
export interface ShardContext {
  model: LlamaModel;
  tokenizer?: Tokenizer;
  /** sample: prompts done and tokens generated so far in this shard. */
  onProgress?: (numDone: number, numTokens: number) => void;
}

function requireTokenizer(ctx: ShardContext, kind: ShardJobKind): Tokenizer {
  if (!ctx.tokenizer) throw new Error(`shard-jobs: ${kind} needs a tokenizer`);
  return ctx.tokenizer;
}

/** Runs one shard in this thread: the one-thread function on the shard's rows, with global seeds and row names. */
export function runShardJob<K extends ShardJobKind>(request: ShardRequest<K>, ctx: ShardContext): ShardJobTypes[K]['result'] {
  const { firstIndex, labels } = request;
  const name = (fallback: (global: number) => string) => (i: number) => labels?.[i] ?? fallback(firstIndex + i);
  switch (request.kind) {
    case 'sample': {
      const options = request.options as SampleJobOptions;
      return samplePolicy(ctx.model, requireTokenizer(ctx, 'sample'), request.rows as Conversation[], {
        ...options,
        seed: options.seed + firstIndex * options.numSamples,
        describePrompt: name((j) => `prompt ${j}`),
        onPromptDone: ctx.onProgress,
      }) as ShardJobTypes[K]['result'];
    }
    case 'score': {
      const options = request.options as ScoreJobOptions;
      return scoreResponses(ctx.model, requireTokenizer(ctx, 'score'), request.rows as ScoreInput[], {
        batchSize: options.batchSize,
        chat: options.chat,
        parseSpecialTokens: options.parseSpecialTokens,
        describeRow: name((i) => `rows[${i}]`),
      }) as ShardJobTypes[K]['result'];
    }
    case 'logprobs': {
      const options = request.options as LogprobsJobOptions;
      return responseLogprobs(ctx.model, request.rows as PromptResponseIds[], options.batchSize, options.padId) as ShardJobTypes[K]['result'];
    }
  }
  throw new Error(`shard-jobs: unknown job kind '${String(request.kind)}' (sample, score, logprobs)`);
}

/**
 * The sampling statistics of several shards that ran at the same time, over `wallSeconds`:
 * counts and peaks are summed (a peak sum bounds what all workers held together from above),
 * the prefix-cache hit rate is weighted by prompt tokens, tokens/s is over the shared wall time.
 */
export function combineSamplingStats(shards: readonly SamplingStats[], wallSeconds: number): SamplingStats {
  if (shards.length === 0) throw new Error('shard-jobs: combineSamplingStats needs at least one shard');
  const sum = (key: keyof SamplingStats) => shards.reduce((a, s) => a + (s[key] as number), 0);
  const numPromptTokens = sum('numPromptTokens');
  const numGeneratedTokens = sum('numGeneratedTokens');
  return {
    kvCache: shards[0].kvCache,
    numRequests: sum('numRequests'),
    numSamples: sum('numSamples'),
    numPromptTokens,
    numPrefillTokens: sum('numPrefillTokens'),
    numGeneratedTokens,
    wallSeconds,
    tokensPerSecond: numGeneratedTokens / Math.max(wallSeconds, 1e-9),
    peakNumSeqs: sum('peakNumSeqs'),
    peakKvBytes: sum('peakKvBytes'),
    idealKvBytes: sum('idealKvBytes'),
    kvBytesPerToken: shards[0].kvBytesPerToken,
    numBlocks: sum('numBlocks'),
    prefixCacheHitRate: numPromptTokens > 0 ? shards.reduce((a, s) => a + s.prefixCacheHitRate * s.numPromptTokens, 0) / numPromptTokens : 0,
    numWaits: sum('numWaits'),
    numForwardPasses: sum('numForwardPasses'),
  };
}
