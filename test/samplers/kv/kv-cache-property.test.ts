/**
 * Randomized property test of the paged KV cache: ~2,000 random engine operations over a small
 * pool, with a shadow model of what every live sequence must read back.
 */
import { describe, expect, it } from 'vitest';
import { KVCacheManager } from '../../../samplers/kv/cache-manager.js';
import { PagedKVStorage } from '../../../samplers/kv/kv-storage.js';
import { checkManagerInvariants, freeBlockIds, gatherSequence, liveSequenceIds } from '../helpers.js';

/** mulberry32: a tiny seeded PRNG, so a failure replays exactly. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NUM_BLOCKS = 48;
const BLOCK_SIZE = 4;
const NUM_OPERATIONS = 2000;
const MAX_LIVE = 16;
const MAX_TOKENS = 36;
const FLOATS_PER_TOKEN = 2; // numKvHeads 1, headDim 2

/**
 * What the "model" writes at each position: key = [prefixHash + 100000·weightsVersion, position],
 * value = [token, prefixHash mod 997]. The prefix hash makes a block's K/V depend on every token
 * before it (as real attention K/V do); the weights version makes K/V from before a
 * `resetPrefixCache` differ from K/V after it. All values are integers below 2^24: exact in float32.
 */
function kvAt(tokens: readonly number[], fromPos: number, toPos: number, weightsVersion: number): { keys: number[]; values: number[] } {
  const keys: number[] = [];
  const values: number[] = [];
  let prefixHash = 0;
  for (let pos = 0; pos < toPos; pos++) {
    prefixHash = (prefixHash * 31 + tokens[pos]!) % 99991;
    if (pos >= fromPos) {
      keys.push(prefixHash + 100000 * weightsVersion, pos);
      values.push(tokens[pos]!, prefixHash % 997);
    }
  }
  return { keys, values };
}

interface Shadow {
  tokens: number[];
  /** Expected keys/values of positions [0, tokens.length), as written. */
  keys: number[];
  values: number[];
}

describe('paged KV cache under random operations', () => {
  it('keeps invariants, reference counts and every sequence’s K/V intact over 2,000 operations', () => {
    const random = mulberry32(20240731);
    const randomInt = (n: number): number => Math.floor(random() * n);
    const manager = new KVCacheManager({ numBlocks: NUM_BLOCKS, blockSize: BLOCK_SIZE });
    const storage = new PagedKVStorage({ numLayers: 1, numBlocks: NUM_BLOCKS, blockSize: BLOCK_SIZE, numKvHeads: 1, headDim: 2 });
    const pool = manager.blockPool;

    // No block freed twice: check every free the manager makes against the count before it.
    let numBlockFrees = 0;
    const originalFree = pool.free.bind(pool);
    pool.free = (blockIds: readonly number[]) => {
      const dropped = new Map<number, number>();
      for (const blockId of blockIds) {
        dropped.set(blockId, (dropped.get(blockId) ?? 0) + 1);
        expect(pool.refCount(blockId), `block ${blockId} freed more often than referenced`).toBeGreaterThanOrEqual(dropped.get(blockId)!);
      }
      numBlockFrees += blockIds.length;
      originalFree(blockIds);
    };

    // A few shared beginnings, over a small alphabet so that forks sometimes generate equal blocks.
    const prefixes = [0, 1, 2].map(() => Array.from({ length: 12 }, () => 1 + randomInt(5)));
    const shadows = new Map<number, Shadow>();
    let nextSeqId = 0;
    let weightsVersion = 0;
    const counts = { prompts: 0, promptFails: 0, forks: 0, forkFails: 0, appends: 0, appendFails: 0, copies: 0, frees: 0, resets: 0, hitTokens: 0 };

    const write = (seqId: number, fromPos: number): void => {
      const shadow = shadows.get(seqId)!;
      const { keys, values } = kvAt(shadow.tokens, fromPos, shadow.tokens.length, weightsVersion);
      storage.write(0, manager.slotMapping(seqId, fromPos, shadow.tokens.length), Float32Array.from(keys), Float32Array.from(values));
      shadow.keys.splice(fromPos * FLOATS_PER_TOKEN, Infinity, ...keys);
      shadow.values.splice(fromPos * FLOATS_PER_TOKEN, Infinity, ...values);
    };
    const state = (): string =>
      JSON.stringify({
        stats: { ...manager.stats(), numAllocationFailures: 0 },
        tables: liveSequenceIds(manager).map((id) => [id, manager.numTokens(id), [...manager.blockTable(id)]]),
        free: freeBlockIds(pool),
      });
    const pickLive = (): number => {
      const ids = liveSequenceIds(manager);
      return ids[randomInt(ids.length)]!;
    };

    for (let step = 0; step < NUM_OPERATIONS; step++) {
      const roll = random();
      const numLive = shadows.size;
      if (numLive === 0 || (roll < 0.3 && numLive < MAX_LIVE)) {
        // A new prompt: a cut of a shared beginning plus a random tail.
        const prompt = [...prefixes[randomInt(3)]!.slice(0, randomInt(13)), ...Array.from({ length: randomInt(6) }, () => 1 + randomInt(5))];
        if (prompt.length === 0) prompt.push(1);
        const seqId = nextSeqId++;
        const before = state();
        const freeBefore = pool.numFreeBlocks;
        const allocation = manager.allocatePrompt(seqId, prompt);
        if (allocation === null) {
          counts.promptFails++;
          expect(state()).toBe(before);
          // Hits never cost more free blocks than allocating them would, so the prompt alone outgrew the free queue.
          expect(Math.ceil(prompt.length / BLOCK_SIZE)).toBeGreaterThan(freeBefore);
        } else {
          counts.prompts++;
          const { numCachedTokens } = allocation;
          expect(numCachedTokens % BLOCK_SIZE).toBe(0);
          expect(numCachedTokens).toBeLessThanOrEqual(prompt.length - 1);
          counts.hitTokens += numCachedTokens;
          // The cached prefix must already hold exactly this prompt's K/V under the current weights.
          const cached = gatherSequence(storage, 0, allocation.blockTable, numCachedTokens);
          const expected = kvAt(prompt, 0, numCachedTokens, weightsVersion);
          expect(Array.from(cached.keys)).toEqual(expected.keys);
          expect(Array.from(cached.values)).toEqual(expected.values);
          shadows.set(seqId, { tokens: [...prompt], keys: [...expected.keys], values: [...expected.values] });
          write(seqId, numCachedTokens);
          manager.cacheFullBlocks(seqId, prompt);
        }
      } else if (roll < 0.45 && numLive < MAX_LIVE) {
        // Rejection sampling: fork K children off a live sequence.
        const parentId = pickLive();
        const childIds = Array.from({ length: 1 + randomInt(4) }, () => nextSeqId++);
        const before = state();
        const freeBefore = pool.numFreeBlocks;
        if (manager.fork(parentId, childIds)) {
          counts.forks++;
          const parent = shadows.get(parentId)!;
          for (const childId of childIds) {
            shadows.set(childId, { tokens: [...parent.tokens], keys: [...parent.keys], values: [...parent.values] });
            expect(manager.blockTable(childId)).toEqual(manager.blockTable(parentId));
          }
        } else {
          counts.forkFails++;
          expect(childIds.length).toBeGreaterThan(freeBefore);
          expect(state()).toBe(before);
        }
      } else if (roll < 0.8) {
        // A decode step of 1–3 tokens for one sequence.
        const seqId = pickLive();
        const shadow = shadows.get(seqId)!;
        const numNewTokens = 1 + randomInt(3);
        if (shadow.tokens.length + numNewTokens > MAX_TOKENS) {
          manager.free(seqId);
          shadows.delete(seqId);
          counts.frees++;
        } else {
          const before = state();
          const freeBefore = pool.numFreeBlocks;
          const append = manager.appendSlots(seqId, numNewTokens);
          if (append === null) {
            counts.appendFails++;
            expect(state()).toBe(before);
            // At most one copy-on-write block on top of the blocks the growth needs.
            const numGrowBlocks = Math.ceil((shadow.tokens.length + numNewTokens) / BLOCK_SIZE) - Math.ceil(shadow.tokens.length / BLOCK_SIZE);
            expect(numGrowBlocks + 1).toBeGreaterThan(freeBefore);
          } else {
            counts.appends++;
            counts.copies += append.copies.length;
            storage.copyBlocks(append.copies);
            const fromPos = shadow.tokens.length;
            for (let i = 0; i < numNewTokens; i++) shadow.tokens.push(1 + randomInt(5));
            write(seqId, fromPos);
            manager.cacheFullBlocks(seqId, shadow.tokens);
          }
        }
      } else if (roll < 0.99) {
        const seqId = pickLive();
        manager.free(seqId);
        shadows.delete(seqId);
        counts.frees++;
      } else {
        // New weights: the cache forgets everything computed before.
        manager.resetPrefixCache();
        weightsVersion++;
        counts.resets++;
      }

      // After every operation: the pool's and manager's invariants, Σ refCount = Σ table
      // lengths, and every live sequence reads back exactly what was written for it.
      checkManagerInvariants(manager);
      let sumRefCounts = 0;
      for (let blockId = 0; blockId < NUM_BLOCKS; blockId++) sumRefCounts += pool.refCount(blockId);
      let sumTableLengths = 0;
      for (const [seqId, shadow] of shadows) {
        const table = manager.blockTable(seqId);
        sumTableLengths += table.length;
        expect(manager.numTokens(seqId)).toBe(shadow.tokens.length);
        const gathered = gatherSequence(storage, 0, table, shadow.tokens.length);
        expect(Array.from(gathered.keys), `sequence ${seqId} keys after step ${step}`).toEqual(shadow.keys);
        expect(Array.from(gathered.values), `sequence ${seqId} values after step ${step}`).toEqual(shadow.values);
      }
      expect(sumRefCounts).toBe(sumTableLengths);
      expect(manager.stats().numUsedBlocks).toBeLessThanOrEqual(NUM_BLOCKS);
    }

    // Every path was exercised, so the checks above were not vacuous.
    expect(counts.prompts).toBeGreaterThan(100);
    expect(counts.promptFails).toBeGreaterThan(0);
    expect(counts.forks).toBeGreaterThan(50);
    expect(counts.forkFails).toBeGreaterThan(0);
    expect(counts.appends).toBeGreaterThan(200);
    expect(counts.appendFails).toBeGreaterThan(0);
    expect(counts.copies).toBeGreaterThan(20);
    expect(counts.resets).toBeGreaterThan(0);
    expect(counts.hitTokens).toBeGreaterThan(0);
    expect(manager.stats().numEvictions).toBeGreaterThan(0);
    expect(manager.stats().peakUsedBlocks).toBe(NUM_BLOCKS);

    // Freeing everything returns every block.
    for (const seqId of liveSequenceIds(manager)) manager.free(seqId);
    expect(pool.numFreeBlocks).toBe(NUM_BLOCKS);
    for (let blockId = 0; blockId < NUM_BLOCKS; blockId++) expect(pool.refCount(blockId)).toBe(0);
    checkManagerInvariants(manager);
    expect(numBlockFrees).toBeGreaterThan(0);
  });
});
