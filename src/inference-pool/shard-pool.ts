/**
 * Row-parallel inference on every core: a pool of N worker threads, each with its own backend
 * and its own copy of a model loaded from its folder, that splits a job's rows into N contiguous
 * shards (`evenRowRanges`: sizes differ by at most one) and lays the shards' results end to end.
 * The jobs (`shard-jobs.ts`) are rejection sampling's `sample`, the reward model's `score`, and
 * `logprobs`; their results equal the one-thread functions' row for row, in input order, with
 * the same seeds (sample i of prompt j: seed + j·K + i) whatever the number of workers.
 *
 * Unlike `WorkerStepEngine`, the parent thread computes nothing here: it keeps its event loop
 * free for progress messages, and needs no model of its own (the workers read the folder).
 * Each worker holds one model at a time and keeps it between jobs on the same folder.
 *
 * Failure: the first worker error rejects the job with that worker's own message (and stack),
 * the message a one-thread run would have given for the same row; a worker that crashes or
 * exits rejects with `shard worker k: …`. Either stops the pool: every worker is terminated and
 * later jobs reject with the same error. Idle workers are `unref`ed, so a caller that forgets
 * `close()` still lets the process end.
 */
import * as tf from '@tensorflow/tfjs';
import { currentBackend } from '../backend.js';
import type { Conversation } from '../../data/rows.js';
import type { PolicySamples } from '../../samplers/policy-sampler.js';
import type { ScoreInput } from '../inference/reward-scoring.js';
import type { PromptResponseIds } from '../inference/token-logprobs.js';
import { evenRowRanges } from '../train/task.js';
import {
  combineSamplingStats,
  type LogprobsJobOptions,
  type SampleJobOptions,
  type ScoreJobOptions,
  type ShardJobKind,
  type ShardJobTypes,
  type ShardRequest,
  type ShardWorkerInit,
} from './shard-jobs.js';
import { allOrFirstError } from '../threads/worker-channel.js';
import { WorkerGroup } from '../threads/worker-group.js';

export interface ShardPoolOptions {
  /** Worker threads (≥ 1); each loads its own copy of the model. */
  numWorkers: number;
  /** The backend every worker initialises; default: the one running in this thread. */
  backend?: 'tensorflow' | 'wasm' | 'cpu';
}

/** Per-job extras of every kind: row names for errors. */
interface RowLabels {
  /** How errors name row i (e.g. `prompts.jsonl:12`); default by index, as the one-thread functions do. */
  labels?: readonly string[];
}

/** The backend running in this thread, as `initBackend` (or tfjs itself) set it. */
function runningBackend(): 'tensorflow' | 'wasm' | 'cpu' {
  const name = currentBackend()?.name ?? tf.getBackend();
  if (name !== 'tensorflow' && name !== 'wasm' && name !== 'cpu') throw new Error(`shard-pool: backend '${name}' cannot be started in a worker (expected tensorflow, wasm or cpu)`);
  return name;
}

export class ShardPool {
  private constructor(private readonly group: WorkerGroup<ShardRequest>) {}

  /** Starts `numWorkers` threads and waits until each has its backend (a failing start rejects). */
  static async create(options: ShardPoolOptions): Promise<ShardPool> {
    const n = options.numWorkers;
    if (!Number.isInteger(n) || n < 1) throw new Error(`shard-pool: numWorkers must be an integer ≥ 1, got ${n}`);
    const backend = options.backend ?? runningBackend();
    const workerData = Array.from({ length: n }, (_, index): ShardWorkerInit => ({ index, backend }));
    const group = await WorkerGroup.start<ShardRequest>(new URL('./shard-worker.js', import.meta.url), workerData, {
      labelOf: (index) => `shard worker ${index}`,
      labelReplyErrors: false,
    });
    return new ShardPool(group);
  }

  get numWorkers(): number {
    return this.group.channels.length;
  }

  /** Worker threads still running (0 after `close()` or a failure). */
  get numLiveWorkers(): number {
    return this.group.numLiveWorkers;
  }

  /**
   * Runs one job over `rows`: worker k takes the k-th contiguous shard; the shards' results come
   * back in shard order. `onProgress(k, numDone, numTokens)` reports shard k's progress.
   */
  private async run<K extends ShardJobKind>(
    job: Omit<ShardRequest<K>, 'rows' | 'firstIndex' | 'labels'>,
    rows: readonly ShardJobTypes[K]['row'][],
    labels: readonly string[] | undefined,
    onProgress?: (shard: number, numDone: number, numTokens: number) => void,
  ): Promise<ShardJobTypes[K]['result'][]> {
    if (this.group.failure) throw this.group.failure;
    if (this.group.isClosed) throw new Error('shard-pool: job after close()');
    if (labels !== undefined && labels.length !== rows.length) throw new Error(`shard-pool: ${labels.length} labels for ${rows.length} rows`);
    const ranges = rows.length === 0 ? [[0, 0] as [number, number]] : evenRowRanges(rows.length, this.numWorkers);
    const replies = ranges.map(([start, end], k) =>
      this.group.channels[k].request(
        { ...job, rows: rows.slice(start, end), firstIndex: start, labels: labels?.slice(start, end) } as ShardRequest,
        onProgress && ((numDone, numTokens) => onProgress(k, numDone, numTokens)),
      ),
    );
    return this.group.guarded(async () => (await allOrFirstError(replies)) as ShardJobTypes[K]['result'][]);
  }

  /**
   * K samples of every prompt from the causal LM in `modelDir` (its tokenizer, or
   * `tokenizerDir`'s): `samplePolicy`'s result, prompts in input order, statistics combined over
   * the workers (`combineSamplingStats`). `onPromptDone` gets the totals over all workers.
   */
  async sample(
    modelDir: string,
    prompts: readonly Conversation[],
    options: SampleJobOptions & RowLabels & { tokenizerDir?: string; onPromptDone?: (numDone: number, numTokensSoFar: number) => void },
  ): Promise<PolicySamples> {
    const { labels, tokenizerDir, onPromptDone, ...jobOptions } = options;
    const progress = new Map<number, { numDone: number; numTokens: number }>();
    const start = performance.now();
    const shards = await this.run<'sample'>(
      { kind: 'sample', modelDir, tokenizerDir, options: jobOptions },
      prompts,
      labels,
      onPromptDone &&
        ((shard, numDone, numTokens) => {
          progress.set(shard, { numDone, numTokens });
          const totals = [...progress.values()].reduce((a, p) => ({ numDone: a.numDone + p.numDone, numTokens: a.numTokens + p.numTokens }), { numDone: 0, numTokens: 0 });
          onPromptDone(totals.numDone, totals.numTokens);
        }),
    );
    const wallSeconds = (performance.now() - start) / 1000;
    return { samples: shards.flatMap((s) => s.samples), stats: combineSamplingStats(shards.map((s) => s.stats), wallSeconds) };
  }

  /** The reward of each {prompt, response} under the reward model in `modelDir`, in input order (`scoreResponses`). */
  async score(modelDir: string, rows: readonly ScoreInput[], options: ScoreJobOptions & RowLabels & { tokenizerDir?: string }): Promise<number[]> {
    const { labels, tokenizerDir, ...jobOptions } = options;
    const shards = await this.run<'score'>({ kind: 'score', modelDir, tokenizerDir, options: jobOptions }, rows, labels);
    return shards.flat();
  }

  /** Every response token's log-prob given its prompt under the causal LM in `modelDir`, in input order (`responseLogprobs`). */
  async logprobs(modelDir: string, rows: readonly PromptResponseIds[], options: LogprobsJobOptions): Promise<Float32Array[]> {
    const shards = await this.run<'logprobs'>({ kind: 'logprobs', modelDir, options }, rows, undefined);
    return shards.flat();
  }

  /** Terminates the workers (their models go with them). */
  close(): Promise<void> {
    return this.group.close();
  }
}
