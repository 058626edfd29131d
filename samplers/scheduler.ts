/**
 * The paged sampler's scheduler (the shape of vLLM's `Scheduler`; iteration-level scheduling as
 * in Orca, Yu et al. 2022): a `waiting` queue of requests (or their remainders) not admitted yet,
 * in request order, a `running` batch of sequences decoding, and `schedule()`, which decides
 * what the engine's next forward pass runs — the prefill of one waiting prompt, or one decode
 * step of the whole running batch. The scheduler runs no model and samples no token (the engine
 * does, samplers/engine.ts); it makes every block-table change through the KV cache manager:
 * `allocatePrompt` on admission, `cacheFullBlocks` + `fork` after a prefill, `appendSlots` for a
 * decode step, `free` when a sequence finishes.
 *
 * Admission never over-commits the pool: a prompt joins only when the free blocks cover its
 * prompt blocks, the most its samples can grow to (prompt + maxNewTokens − 1 stored tokens) and
 * the most every running sequence can still grow to. Decoding therefore never runs out of
 * blocks; when the pool is full, prompts wait for running sequences to finish (counted in
 * `numWaits`). A request whose K samples do not all fit (maxNumSeqs, or the pool) is split:
 * the later chunks find the prompt's full blocks in the prefix cache and recompute only the rest.
 *
 * Between two decode steps the scheduler admits prompts one prefill at a time against one
 * headroom (the free blocks minus what the running batch may still take), taken when the
 * admissions start, or afresh while nothing runs; seats freed by samples that finish at their
 * first token are reused at once.
 */
import { Rng } from '../src/util/rng.js';
import type { BlockCopy, KVCacheManager } from './kv/cache-manager.js';
import type { SamplingRequest } from './sampling-io.js';

/** The samples of one prompt admitted together: they share the prompt's blocks (and its cascade prefix). */
export interface SequenceGroup {
  /** Unique within a scheduler; the cascade attention's prefix key. */
  id: number;
  requestIndex: number;
  promptIds: readonly number[];
}

/** One sample being generated. */
export interface Sequence {
  /** The KV cache manager's sequence id. */
  seqId: number;
  group: SequenceGroup;
  sampleIndex: number;
  /** `new Rng(seed + sampleIndex)` of its request. */
  rng: Rng;
  /** Generated so far; the last one is fed at the next decode step. */
  tokenIds: number[];
  /** Σ log p(token) so far (kept by the engine when it reports log-probabilities). */
  logprobSum: number;
}

/** Run the prompt of `requestIndex` (its blocks are allocated), then `forkSamples` it into samples [firstSample, firstSample + numSamples). */
export interface ScheduledPrefill {
  kind: 'prefill';
  /** The prompt's own sequence id: it holds the blocks until the fork. */
  seqId: number;
  requestIndex: number;
  request: SamplingRequest;
  firstSample: number;
  numSamples: number;
  /** Leading prompt tokens the prefix cache already holds: the forward computes the rest. */
  numCachedTokens: number;
}

/** Feed each sequence its last token (one slot each is allocated), after performing the block copies. */
export interface ScheduledDecode {
  kind: 'decode';
  /** The running batch, in batch order. */
  sequences: readonly Sequence[];
  /** Copy-on-write copies the storage must perform before any layer writes. */
  copies: readonly BlockCopy[];
}

export type ScheduledStep = ScheduledPrefill | ScheduledDecode;

export interface SchedulerLimits {
  /** Most sequences decoding at once. */
  maxNumSeqs: number;
  /** Most tokens a sample generates (the call's decoding.maxNewTokens). */
  maxNewTokens: number;
  /** Hands out sequence ids unique among the manager's live sequences (the engine's counter, across calls). */
  newSeqId: () => number;
}

/** What the scheduler alone knows; cache figures come from the KV cache manager. */
export interface SchedulerStats {
  /** Admission rounds that stopped because the KV pool was full while a prompt waited. */
  numWaits: number;
  /** Most sequences running at once. */
  peakNumSeqs: number;
  /** Most tokens an ideal cache would have held for the running batch: each prompt once, plus each sample's own stored tokens. */
  peakIdealTokens: number;
}

interface WaitingRequest {
  requestIndex: number;
  request: SamplingRequest;
  /** The first sample not admitted yet. */
  nextSample: number;
}

export class Scheduler {
  /** Requests (or their remainders) not admitted yet, in request order. */
  private readonly waiting: WaitingRequest[] = [];
  /** The decoding batch, in admission order. */
  private readonly running: Sequence[] = [];
  private readonly blockSize: number;
  /** Blocks admissions may still promise until the next decode step; null between admission rounds. */
  private headroom: number | null = null;
  private nextGroupId = 0;
  private readonly counters: SchedulerStats = { numWaits: 0, peakNumSeqs: 0, peakIdealTokens: 0 };

  constructor(
    private readonly manager: KVCacheManager,
    private readonly limits: SchedulerLimits,
  ) {
    this.blockSize = manager.blockSize;
  }

  addRequest(requestIndex: number, request: SamplingRequest): void {
    this.waiting.push({ requestIndex, request, nextSample: 0 });
  }

  /** Some request has samples waiting or running. */
  hasUnfinished(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  /**
   * The next forward pass: a prefill while the round of admissions since the last decode step
   * admits one more prompt chunk, else a decode step of the running batch. Throws when a
   * waiting prompt cannot fit even an empty pool.
   */
  schedule(): ScheduledStep {
    // A new round of admissions; with nothing running, also after admissions whose samples all finished at their first token.
    if (this.headroom === null || this.running.length === 0) {
      this.headroom = this.manager.blockPool.numFreeBlocks - this.running.reduce((a, seq) => a + this.futureBlocks(seq), 0);
    }
    const prefill = this.admitNext(this.headroom);
    if (prefill !== null) return prefill;
    this.headroom = null;
    if (this.running.length === 0) throw new Error('samplers/scheduler: internal error: schedule() called with nothing waiting or running');
    return this.scheduleDecode();
  }

  /**
   * After a prefill's forward wrote the prompt's K/V: registers its full blocks in the prefix
   * cache, forks it into its samples (which join the running batch), and releases the prompt's
   * own hold on the blocks. Returns the new sequences, whose first token the engine samples.
   */
  forkSamples(prefill: ScheduledPrefill): Sequence[] {
    const { request, requestIndex, firstSample, numSamples, seqId } = prefill;
    this.manager.cacheFullBlocks(seqId, request.promptIds);
    const group: SequenceGroup = { id: this.nextGroupId++, requestIndex, promptIds: request.promptIds };
    const children: Sequence[] = [];
    for (let i = 0; i < numSamples; i++) {
      const sampleIndex = firstSample + i;
      children.push({ seqId: this.limits.newSeqId(), group, sampleIndex, rng: new Rng(request.seed + sampleIndex), tokenIds: [], logprobSum: 0 });
    }
    if (!this.manager.fork(seqId, children.map((c) => c.seqId))) {
      throw new Error('samplers/scheduler: internal error: admission control let in more samples than free blocks');
    }
    this.manager.free(seqId);
    this.running.push(...children);
    this.recordPeaks();
    return children;
  }

  /**
   * After a decode step's forward wrote the fed tokens' K/V: registers the blocks that filled up
   * in the prefix cache. Call before the new tokens are appended to `tokenIds`.
   */
  cacheFilledBlocks(decode: ScheduledDecode): void {
    for (const seq of decode.sequences) {
      const numStored = this.manager.numTokens(seq.seqId);
      if (numStored % this.blockSize === 0) this.manager.cacheFullBlocks(seq.seqId, [...seq.group.promptIds, ...seq.tokenIds].slice(0, numStored));
    }
  }

  /** A sequence is done: its blocks go back to the pool and it leaves the running batch. */
  finish(seq: Sequence): void {
    const index = this.running.indexOf(seq);
    if (index < 0) throw new Error(`samplers/scheduler: finish: sequence ${seq.seqId} is not running`);
    this.manager.free(seq.seqId);
    this.running.splice(index, 1);
  }

  stats(): SchedulerStats {
    return { ...this.counters };
  }

  /** Blocks a sequence's table can reach: positions [0, prompt + maxNewTokens − 1) are the most ever stored. */
  private maxTableBlocks(promptLength: number): number {
    return Math.ceil((promptLength + this.limits.maxNewTokens - 1) / this.blockSize);
  }

  /** Blocks a running sequence may still take: growth of its table, plus a copy of a shared partial last block. */
  private futureBlocks(seq: Sequence): number {
    const table = this.manager.blockTable(seq.seqId);
    const numTokens = this.manager.numTokens(seq.seqId);
    const sharedPartial = numTokens % this.blockSize !== 0 && this.manager.blockPool.refCount(table[table.length - 1]!) > 1 ? 1 : 0;
    return this.maxTableBlocks(seq.group.promptIds.length) - table.length + sharedPartial;
  }

  /** Admits the head of the waiting queue, as many samples as seats and `headroom` allow; null (counting a wait when the pool is the reason) when none fit. */
  private admitNext(headroom: number): ScheduledPrefill | null {
    const entry = this.waiting[0];
    const { maxNumSeqs } = this.limits;
    if (entry === undefined || this.running.length >= maxNumSeqs) return null;
    const { request, requestIndex } = entry;
    const promptLength = request.promptIds.length;
    const promptBlocks = Math.ceil(promptLength / this.blockSize);
    // Each fork needs at least one block (its first append), whatever maxNewTokens.
    const blocksPerSample = Math.max(1, this.maxTableBlocks(promptLength) - Math.floor(promptLength / this.blockSize));
    const numFitting = Math.floor((headroom - promptBlocks) / blocksPerSample);
    const numSamples = Math.min(request.numSamples - entry.nextSample, maxNumSeqs - this.running.length, numFitting);
    if (numSamples < 1) {
      if (this.running.length === 0) {
        throw new Error(
          `samplers/engine: requests[${requestIndex}]: one sample needs ${promptBlocks + blocksPerSample} KV blocks but the pool has ${this.manager.numBlocks}; raise numBlocks/kvCacheBytes or lower maxNewTokens`,
        );
      }
      this.counters.numWaits++;
      return null;
    }
    this.headroom = headroom - (promptBlocks + numSamples * blocksPerSample);
    const firstSample = entry.nextSample;
    entry.nextSample += numSamples;
    if (entry.nextSample === request.numSamples) this.waiting.shift();
    const seqId = this.limits.newSeqId();
    const allocation = this.manager.allocatePrompt(seqId, request.promptIds);
    if (allocation === null) throw new Error('samplers/scheduler: internal error: admission control let in a prompt the pool cannot hold');
    return { kind: 'prefill', seqId, requestIndex, request, firstSample, numSamples, numCachedTokens: allocation.numCachedTokens };
  }

  /** One more slot for every running sequence (copy-on-write where its last block is shared). */
  private scheduleDecode(): ScheduledDecode {
    const copies: BlockCopy[] = [];
    for (const seq of this.running) {
      const appended = this.manager.appendSlots(seq.seqId, 1);
      if (appended === null) throw new Error('samplers/scheduler: internal error: admission control left a running sequence without a block');
      copies.push(...appended.copies);
    }
    this.recordPeaks();
    return { kind: 'decode', sequences: [...this.running], copies };
  }

  private recordPeaks(): void {
    this.counters.peakNumSeqs = Math.max(this.counters.peakNumSeqs, this.running.length);
    const groups = new Set<SequenceGroup>();
    let idealTokens = 0;
    for (const seq of this.running) {
      if (!groups.has(seq.group)) {
        groups.add(seq.group);
        idealTokens += seq.group.promptIds.length;
      }
      idealTokens += this.manager.numTokens(seq.seqId) - seq.group.promptIds.length;
    }
    this.counters.peakIdealTokens = Math.max(this.counters.peakIdealTokens, idealTokens);
  }
}
