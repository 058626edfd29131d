import { describe, expect, it } from 'vitest';
import { KVCacheManager } from '../../samplers/kv/cache-manager.js';
import { Rng } from '../../src/util/rng.js';
import type { SamplingRequest } from '../../samplers/sampling-io.js';
import { type ScheduledStep, Scheduler, type Sequence } from '../../samplers/scheduler.js';
import { checkManagerInvariants, liveSequenceIds } from './helpers.js';

/** A scheduler over a fresh pool of `numBlocks` blocks of 4 tokens; no model, tokens are made up. */
function setup(numBlocks: number, requests: SamplingRequest[], limits: { maxNumSeqs?: number; maxNewTokens: number }) {
  const manager = new KVCacheManager({ numBlocks, blockSize: 4 });
  let nextSeqId = 0;
  const scheduler = new Scheduler(manager, { maxNumSeqs: limits.maxNumSeqs ?? 128, maxNewTokens: limits.maxNewTokens, newSeqId: () => nextSeqId++ });
  requests.forEach((request, r) => scheduler.addRequest(r, request));
  return { manager, scheduler };
}

/** What the engine does after a step's forward, with token 7 for every sample; `finishAt` ends a sample once it has that many tokens. */
function complete(scheduler: Scheduler, step: ScheduledStep, finishAt: number): Sequence[] {
  const sequences = step.kind === 'prefill' ? scheduler.forkSamples(step) : (scheduler.cacheFilledBlocks(step), step.sequences);
  for (const seq of sequences) {
    seq.tokenIds.push(7);
    if (seq.tokenIds.length >= finishAt) scheduler.finish(seq);
  }
  return [...sequences];
}

const prompt6 = (first: number) => [first, 7, 3, 20, 5, first + 1];

describe('Scheduler', () => {
  it('admits what the pool can hold for the longest samples, then waits (hand-worked block counts)', () => {
    // Prompt of 6 = 2 blocks; maxNewTokens 10 → at most 15 stored tokens = 4 blocks a table, 3 of them a sample's own.
    const requests = [0, 1].map((p) => ({ promptIds: prompt6(p + 1), numSamples: 3, seed: 0 }));
    const { manager, scheduler } = setup(14, requests, { maxNewTokens: 10 });
    const first = scheduler.schedule();
    expect(first).toMatchObject({ kind: 'prefill', requestIndex: 0, firstSample: 0, numSamples: 3, numCachedTokens: 0 }); // 2 + 3·3 = 11 ≤ 14
    expect(manager.stats().numUsedBlocks).toBe(2);
    const samples = complete(scheduler, first, 10);
    expect(samples.map((s) => [s.sampleIndex, s.group.requestIndex])).toEqual([[0, 0], [1, 0], [2, 0]]);
    // The second prompt needs 11 too, but only 14 − 11 = 3 are not promised: it waits, and the batch decodes.
    const second = scheduler.schedule();
    expect(second.kind).toBe('decode');
    if (second.kind !== 'decode') return;
    expect(second.sequences).toEqual(samples);
    // The shared partial block (2 of 4 tokens): the first two samples copy it, the last holder writes in place.
    expect(second.copies).toEqual([{ src: 1, dst: 2 }, { src: 1, dst: 3 }]);
    expect(scheduler.stats()).toEqual({ numWaits: 1, peakNumSeqs: 3, peakIdealTokens: 6 + 3 * 1 });
    checkManagerInvariants(manager);
    // Decode to the end: the second prompt is admitted only once the first one's samples are gone.
    let step: ScheduledStep = second;
    let numDecodeSteps = 0;
    for (;;) {
      complete(scheduler, step, 10);
      numDecodeSteps += step.kind === 'decode' ? 1 : 0;
      step = scheduler.schedule();
      if (step.kind === 'prefill') break;
    }
    expect(numDecodeSteps).toBe(9); // tokens 2..10 of the first three samples
    expect(step).toMatchObject({ requestIndex: 1, numSamples: 3 });
    expect(scheduler.stats().numWaits).toBe(9); // one per round of admissions while the pool was full
    // 15 stored tokens = 4 blocks a sample: the shared full prompt block + 3 own (the last holder kept
    // the partial prompt block, so admission's 11 was one block more than was ever used).
    expect(manager.stats().peakUsedBlocks).toBe(1 + 3 * 3);
  });

  it('splits a request that exceeds maxNumSeqs; the later chunk hits the prompt in the prefix cache', () => {
    const { manager, scheduler } = setup(32, [{ promptIds: prompt6(1), numSamples: 3, seed: 5 }], { maxNumSeqs: 2, maxNewTokens: 3 });
    const first = scheduler.schedule();
    expect(first).toMatchObject({ kind: 'prefill', firstSample: 0, numSamples: 2, numCachedTokens: 0 });
    const chunk1 = complete(scheduler, first, 3);
    expect(chunk1.map((s) => s.rng.state())).toEqual([new Rng(5).state(), new Rng(6).state()]); // sample i draws from seed + i
    let step = scheduler.schedule();
    while (step.kind === 'decode') {
      complete(scheduler, step, 3);
      step = scheduler.schedule();
    }
    // Seats came free: sample 2 alone, its prompt's first full block (4 tokens) from the cache.
    expect(step).toMatchObject({ kind: 'prefill', firstSample: 2, numSamples: 1, numCachedTokens: 4 });
    expect(manager.stats()).toMatchObject({ numPromptTokens: 12, numCachedPromptTokens: 4 });
    expect(scheduler.stats().numWaits).toBe(0);
  });

  it('a round whose samples all finish at their first token leaves the whole pool to the next prompt', () => {
    // Prompt of 6, maxNewTokens 1: 2 prompt blocks + 1 block a sample = 3 of 4. The first prompt's
    // sample finishes at once; the second prompt must then see all 4 blocks free, not the 1 left
    // unpromised when the round began.
    const requests = [0, 1].map((p) => ({ promptIds: prompt6(10 * p + 1), numSamples: 1, seed: p }));
    const { manager, scheduler } = setup(4, requests, { maxNewTokens: 1 });
    const first = scheduler.schedule();
    complete(scheduler, first, 1);
    expect(scheduler.hasUnfinished()).toBe(true);
    expect(scheduler.schedule()).toMatchObject({ kind: 'prefill', requestIndex: 1, numSamples: 1 });
    expect(scheduler.stats().numWaits).toBe(0);
    expect(liveSequenceIds(manager)).toEqual([2]); // the second prompt's own sequence, until its fork
  });

  it('throws a one-line error when one sample cannot fit an empty pool, and on finishing a stranger', () => {
    const { scheduler } = setup(4, [{ promptIds: prompt6(1), numSamples: 2, seed: 0 }], { maxNewTokens: 10 });
    expect(() => scheduler.schedule()).toThrow(
      'samplers/engine: requests[0]: one sample needs 5 KV blocks but the pool has 4; raise numBlocks/kvCacheBytes or lower maxNewTokens',
    );
    const other = setup(8, [{ promptIds: [1, 2], numSamples: 1, seed: 0 }], { maxNewTokens: 2 });
    const [seq] = complete(other.scheduler, other.scheduler.schedule(), 1);
    expect(() => other.scheduler.finish(seq!)).toThrow(`samplers/scheduler: finish: sequence ${seq!.seqId} is not running`);
    expect(other.scheduler.hasUnfinished()).toBe(false);
  });
});
