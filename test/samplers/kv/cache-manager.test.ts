import { describe, expect, it } from 'vitest';
import { KVCacheManager } from '../../../samplers/kv/cache-manager.js';
import { PagedKVStorage } from '../../../samplers/kv/kv-storage.js';
import { checkManagerInvariants, freeBlockIds, gatherSequence, hashFullBlocks, liveSequenceIds } from '../helpers.js';

const NUM_KV_HEADS = 2;
const HEAD_DIM = 2;

/** Token-specific K/V: key[t, h, d] = 10·token + 2h + d, value = −key. [T, 2, 2] flat. */
function kvFor(tokens: readonly number[]): { keys: Float32Array; values: Float32Array } {
  const keys = new Float32Array(tokens.length * NUM_KV_HEADS * HEAD_DIM);
  tokens.forEach((token, t) => {
    for (let h = 0; h < NUM_KV_HEADS; h++) for (let d = 0; d < HEAD_DIM; d++) keys[(t * NUM_KV_HEADS + h) * HEAD_DIM + d] = 10 * token + 2 * h + d;
  });
  return { keys, values: keys.map((x) => -x) };
}

/** What the engine does for positions [fromPos, tokens.length) of a sequence. */
function writeTokens(manager: KVCacheManager, storage: PagedKVStorage, seqId: number, tokens: readonly number[], fromPos: number): void {
  const { keys, values } = kvFor(tokens.slice(fromPos));
  storage.write(0, manager.slotMapping(seqId, fromPos, tokens.length), keys, values);
}

function gatherKeys(manager: KVCacheManager, storage: PagedKVStorage, seqId: number): number[] {
  return Array.from(gatherSequence(storage, 0, manager.blockTable(seqId), manager.numTokens(seqId)).keys);
}

/** Everything observable about the manager except the failure counter. */
function snapshot(manager: KVCacheManager): string {
  const { numAllocationFailures: _ignored, ...stats } = manager.stats();
  const tables = liveSequenceIds(manager).map((id) => [id, manager.numTokens(id), [...manager.blockTable(id)]]);
  return JSON.stringify({ stats, tables, free: freeBlockIds(manager.blockPool) });
}

describe('KVCacheManager basics', () => {
  it('allocates a table of ⌈len / blockSize⌉ blocks and maps positions to slots', () => {
    const manager = new KVCacheManager({ numBlocks: 8, blockSize: 4 });
    const allocation = manager.allocatePrompt(7, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])!;
    expect(allocation.numCachedTokens).toBe(0);
    expect(allocation.blockTable).toEqual([0, 1, 2]);
    expect(manager.numTokens(7)).toBe(10);
    // Positions 2..9 over blocks [0, 1, 2]: 0·4+2, 0·4+3, 1·4+0, …, 2·4+1.
    expect(Array.from(manager.slotMapping(7, 2, 10))).toEqual([2, 3, 4, 5, 6, 7, 8, 9]);
    manager.free(7);
    // Freed last block first: uncached blocks go to the head, so 0 ends up first.
    expect(manager.allocatePrompt(8, [1, 2, 3, 4, 5])!.blockTable).toEqual([0, 1]);
    expect(Array.from(manager.slotMapping(8, 0, 5))).toEqual([0, 1, 2, 3, 4]);
    const append = manager.appendSlots(8, 4)!;
    expect(append).toEqual({ newBlocks: [2], copies: [] });
    expect(Array.from(manager.slotMapping(8, 5, 9))).toEqual([5, 6, 7, 8]);
    expect(manager.stats().peakUsedBlocks).toBe(3);
    checkManagerInvariants(manager);
  });

  it('slot mapping follows a non-contiguous table', () => {
    const manager = new KVCacheManager({ numBlocks: 4, blockSize: 4 });
    manager.allocatePrompt(0, [1, 2, 3, 4]); // block 0
    manager.allocatePrompt(1, [5, 6, 7, 8]); // block 1
    manager.allocatePrompt(2, [9]); // block 2
    manager.free(1);
    manager.appendSlots(0, 5); // positions 4..8 need 2 blocks: 1 (head), then 3
    expect(manager.blockTable(0)).toEqual([0, 1, 3]);
    expect(Array.from(manager.slotMapping(0, 2, 9))).toEqual([2, 3, 4, 5, 6, 7, 12]);
  });

  it('defaults blockSize to 16 and rejects bad options and calls with one-line errors', () => {
    expect(new KVCacheManager({ numBlocks: 2 }).blockSize).toBe(16);
    expect(() => new KVCacheManager({ numBlocks: 0 })).toThrow('KVCacheManager options: numBlocks');
    expect(() => new KVCacheManager({ numBlocks: 2 ** 28, blockSize: 16 })).toThrow('Int32 slot index');
    const manager = new KVCacheManager({ numBlocks: 2, blockSize: 4 });
    expect(() => manager.allocatePrompt(0, [])).toThrow('sequence 0 has an empty prompt');
    expect(() => manager.allocatePrompt(0, Array.from({ length: 9 }, () => 1))).toThrow('needs 3 blocks but the pool has only 2');
    manager.allocatePrompt(0, [1]);
    expect(() => manager.allocatePrompt(0, [1])).toThrow('sequence 0 already exists');
    expect(() => manager.appendSlots(0, 8)).toThrow('needs 3 blocks but the pool has only 2');
    expect(() => manager.appendSlots(5, 1)).toThrow('appendSlots: no live sequence 5');
    expect(() => manager.slotMapping(0, 0, 2)).toThrow('[0, 2) is not within [0, 1)');
    expect(() => manager.fork(0, [1, 1])).toThrow('child sequence 1 is listed twice');
    expect(() => manager.cacheFullBlocks(0, [1, 2])).toThrow('2 tokens given but only 1 slots allocated');
  });
});

describe('fork and copy-on-write', () => {
  it('two forks appending different tokens into a shared partial block each keep their own', () => {
    const manager = new KVCacheManager({ numBlocks: 10, blockSize: 4 });
    const storage = new PagedKVStorage({ numLayers: 1, numBlocks: 10, blockSize: 4, numKvHeads: NUM_KV_HEADS, headDim: HEAD_DIM });
    const prompt = [1, 2, 3, 4, 5, 6]; // block 0 full, block 1 holds 2 of 4
    manager.allocatePrompt(0, prompt);
    writeTokens(manager, storage, 0, prompt, 0);
    expect(manager.fork(0, [1, 2])).toBe(true);
    expect(manager.blockTable(1)).toEqual([0, 1]);
    expect(manager.blockPool.refCount(0)).toBe(3);
    expect(manager.blockPool.refCount(1)).toBe(3);

    // Each child's first append copies the shared partial block; the parent, last holder, writes in place.
    const child1 = manager.appendSlots(1, 1)!;
    expect(child1).toEqual({ newBlocks: [], copies: [{ src: 1, dst: 2 }] });
    storage.copyBlocks(child1.copies);
    writeTokens(manager, storage, 1, [...prompt, 100], 6);
    const child2 = manager.appendSlots(2, 1)!;
    expect(child2).toEqual({ newBlocks: [], copies: [{ src: 1, dst: 3 }] });
    storage.copyBlocks(child2.copies);
    writeTokens(manager, storage, 2, [...prompt, 200], 6);
    expect(manager.blockPool.refCount(1)).toBe(1);
    expect(manager.appendSlots(0, 1)).toEqual({ newBlocks: [], copies: [] });
    writeTokens(manager, storage, 0, [...prompt, 300], 6);

    // The full block 0 stays shared; every sequence reads the prompt then its own token.
    expect(manager.blockTable(0)).toEqual([0, 1]);
    expect(manager.blockTable(1)).toEqual([0, 2]);
    expect(manager.blockTable(2)).toEqual([0, 3]);
    expect(gatherKeys(manager, storage, 0)).toEqual(Array.from(kvFor([...prompt, 300]).keys));
    expect(gatherKeys(manager, storage, 1)).toEqual(Array.from(kvFor([...prompt, 100]).keys));
    expect(gatherKeys(manager, storage, 2)).toEqual(Array.from(kvFor([...prompt, 200]).keys));
    const values1 = gatherSequence(storage, 0, manager.blockTable(1), 7).values;
    expect(Array.from(values1)).toEqual(Array.from(kvFor([...prompt, 100]).values));

    // Growing past the block boundary: no more copies, a fresh block each.
    const grow = manager.appendSlots(1, 3)!;
    expect(grow).toEqual({ newBlocks: [4], copies: [] });
    writeTokens(manager, storage, 1, [...prompt, 100, 101, 102, 103], 7);
    expect(gatherKeys(manager, storage, 1)).toEqual(Array.from(kvFor([...prompt, 100, 101, 102, 103]).keys));
    expect(gatherKeys(manager, storage, 2)).toEqual(Array.from(kvFor([...prompt, 200]).keys));
    checkManagerInvariants(manager);
  });

  it('a fork at a block boundary shares every block and copies nothing', () => {
    const manager = new KVCacheManager({ numBlocks: 6, blockSize: 4 });
    manager.allocatePrompt(0, [1, 2, 3, 4, 5, 6, 7, 8]);
    manager.fork(0, [1]);
    expect(manager.appendSlots(1, 1)).toEqual({ newBlocks: [2], copies: [] });
    expect(manager.appendSlots(0, 1)).toEqual({ newBlocks: [3], copies: [] });
    expect(manager.blockTable(1)).toEqual([0, 1, 2]);
    expect(manager.blockPool.refCount(1)).toBe(2);
    manager.free(0);
    manager.free(1);
    expect(manager.stats().numFreeBlocks).toBe(6);
    checkManagerInvariants(manager);
  });
});

describe('prefix cache', () => {
  const blockSize = 4;
  const shared = [11, 12, 13, 14, 15, 16, 17, 18]; // two full blocks

  it('a second prompt with a common 2-block prefix reuses the same blocks and their data', () => {
    const manager = new KVCacheManager({ numBlocks: 12, blockSize });
    const storage = new PagedKVStorage({ numLayers: 1, numBlocks: 12, blockSize, numKvHeads: NUM_KV_HEADS, headDim: HEAD_DIM });
    const promptA = [...shared, 1, 2, 3];
    const a = manager.allocatePrompt(0, promptA)!;
    expect(a.numCachedTokens).toBe(0);
    writeTokens(manager, storage, 0, promptA, 0);
    manager.cacheFullBlocks(0, promptA);
    expect(manager.stats().numCachedBlocks).toBe(2);

    const promptB = [...shared, 7, 7];
    const b = manager.allocatePrompt(1, promptB)!;
    expect(b.numCachedTokens).toBe(2 * blockSize);
    expect(b.blockTable.slice(0, 2)).toEqual(a.blockTable.slice(0, 2));
    expect(b.blockTable[2]).not.toBe(a.blockTable[2]);
    expect(manager.blockPool.refCount(a.blockTable[0]!)).toBe(2);
    // Only the new tokens are computed; the cached prefix is read back as written for A.
    writeTokens(manager, storage, 1, promptB, b.numCachedTokens);
    expect(gatherKeys(manager, storage, 1)).toEqual(Array.from(kvFor(promptB).keys));

    // Stats: 8 of 11 + 10 = 21 prompt tokens came from the cache. A's lookup missed at its
    // first block and stopped there (1 query); B looked up 2 blocks, both hits.
    const stats = manager.stats();
    expect(stats.cacheHitRate).toBeCloseTo(8 / 21, 12);
    expect(stats.numCacheQueries).toBe(1 + 2);
    expect(stats.numCacheHits).toBe(2);
  });

  it('a full hit still recomputes the last token', () => {
    const manager = new KVCacheManager({ numBlocks: 12, blockSize });
    const promptA = [...shared, 1];
    const a = manager.allocatePrompt(0, promptA)!;
    manager.cacheFullBlocks(0, promptA);
    // Same 9 tokens: both full blocks hit, only position 8 is recomputed.
    const again = manager.allocatePrompt(1, promptA)!;
    expect(again.numCachedTokens).toBe(8);
    expect(again.blockTable.slice(0, 2)).toEqual(a.blockTable.slice(0, 2));
    // Exactly the 8 shared tokens (a multiple of blockSize): only the first block is taken from
    // the cache; the last block is allocated fresh and recomputed whole, never written shared.
    const exact = manager.allocatePrompt(2, shared)!;
    expect(exact.numCachedTokens).toBe(4);
    expect(exact.blockTable[0]).toBe(a.blockTable[0]);
    expect(exact.blockTable[1]).not.toBe(a.blockTable[1]);
    expect(manager.blockPool.refCount(exact.blockTable[1]!)).toBe(1);
    // Registering it finds block 1's prefix already cached by A: the first copy stays the one hit.
    manager.cacheFullBlocks(2, shared);
    expect(manager.blockPool.lookupCached(hashFullBlocks(shared, blockSize)[1]!)).toBe(a.blockTable[1]);
    // A one-token prompt has nothing cacheable.
    expect(manager.allocatePrompt(3, [11])!.numCachedTokens).toBe(0);
    checkManagerInvariants(manager);
  });

  it('evicts the least recently freed cached block first, and a sequence’s last block before its first', () => {
    const manager = new KVCacheManager({ numBlocks: 6, blockSize: 2 });
    const promptX = [1, 2, 3, 4, 5];
    const promptY = [6, 7, 8, 9, 10];
    expect(manager.allocatePrompt(0, promptX)!.blockTable).toEqual([0, 1, 2]);
    manager.cacheFullBlocks(0, promptX);
    manager.free(0); // queue: 2 (uncached, head), 3, 4, 5, 1, 0
    expect(manager.allocatePrompt(1, promptY)!.blockTable).toEqual([2, 3, 4]);
    manager.cacheFullBlocks(1, promptY);
    manager.free(1);
    expect(freeBlockIds(manager.blockPool)).toEqual([4, 5, 1, 0, 3, 2]);
    // Three new blocks: the two uncached ones, then X's second block (freed before X's first).
    expect(manager.allocatePrompt(2, [20, 21, 22, 23, 24, 25])!.blockTable).toEqual([4, 5, 1]);
    expect(manager.stats().numEvictions).toBe(1);
    const [x0, x1] = hashFullBlocks(promptX, 2);
    const [y0, y1] = hashFullBlocks(promptY, 2);
    expect(manager.blockPool.lookupCached(x0!)).toBe(0);
    expect(manager.blockPool.lookupCached(x1!)).toBeUndefined();
    expect(manager.blockPool.lookupCached(y0!)).toBe(2);
    expect(manager.blockPool.lookupCached(y1!)).toBe(3);
    // X again: only its first block is left to hit.
    const again = manager.allocatePrompt(3, promptX)!;
    expect(again.numCachedTokens).toBe(2);
    expect(again.blockTable[0]).toBe(0);
    checkManagerInvariants(manager);
  });

  it('resetPrefixCache stops hits, and sequences from before the reset register nothing', () => {
    const manager = new KVCacheManager({ numBlocks: 12, blockSize });
    const prompt = [...shared, 1];
    manager.allocatePrompt(0, prompt);
    manager.cacheFullBlocks(0, [shared[0]!, shared[1]!, shared[2]!, shared[3]!]);
    expect(manager.stats().numCachedBlocks).toBe(1);
    manager.resetPrefixCache();
    expect(manager.stats().numCachedBlocks).toBe(0);
    manager.cacheFullBlocks(0, prompt); // old weights: ignored
    expect(manager.stats().numCachedBlocks).toBe(0);
    expect(manager.allocatePrompt(1, prompt)!.numCachedTokens).toBe(0);
    manager.cacheFullBlocks(1, prompt);
    expect(manager.stats().numCachedBlocks).toBe(2);
    expect(manager.allocatePrompt(2, prompt)!.numCachedTokens).toBe(8);
    checkManagerInvariants(manager);
  });

  it('caches nothing when prefix caching is disabled', () => {
    const manager = new KVCacheManager({ numBlocks: 12, blockSize, enablePrefixCaching: false });
    manager.allocatePrompt(0, [...shared, 1]);
    manager.cacheFullBlocks(0, [...shared, 1]);
    expect(manager.stats().numCachedBlocks).toBe(0);
    expect(manager.allocatePrompt(1, [...shared, 1])!.numCachedTokens).toBe(0);
    expect(manager.stats().numCacheQueries).toBe(0);
  });
});

describe('pool exhaustion', () => {
  it('returns null or false and leaves every table, count and the free queue unchanged', () => {
    const manager = new KVCacheManager({ numBlocks: 4, blockSize: 4 });
    manager.allocatePrompt(0, [1, 2, 3, 4, 5, 6]); // blocks 0, 1 (1 partly filled)
    manager.cacheFullBlocks(0, [1, 2, 3, 4, 5, 6]);
    expect(manager.fork(0, [1])).toBe(true);
    manager.allocatePrompt(2, [9, 9, 9, 9, 9]); // blocks 2, 3: pool full
    let before = snapshot(manager);

    expect(manager.allocatePrompt(3, [7])).toBeNull();
    expect(liveSequenceIds(manager).includes(3)).toBe(false);
    expect(manager.appendSlots(1, 1)).toBeNull(); // needs a copy of the shared block 1
    expect(manager.appendSlots(2, 4)).toBeNull(); // needs a third block
    expect(manager.fork(2, [4])).toBe(false);
    expect(liveSequenceIds(manager).includes(4)).toBe(false);
    expect(snapshot(manager)).toBe(before);
    expect(manager.stats().numAllocationFailures).toBe(4);
    checkManagerInvariants(manager);

    // A hit on a free cached block uses up a free block too: with block 0 free and cached,
    // a prompt hitting it and needing one more block cannot fit into one free block.
    manager.free(2);
    manager.free(1);
    manager.free(0);
    manager.allocatePrompt(5, [8, 8, 8, 8, 8, 8, 8, 8, 8]); // 3 blocks: 1, 3, 2 (uncached first)
    expect(freeBlockIds(manager.blockPool)).toEqual([0]);
    before = snapshot(manager);
    expect(manager.allocatePrompt(6, [1, 2, 3, 4, 5])).toBeNull();
    expect(snapshot(manager)).toBe(before);
    expect(manager.blockPool.lookupCached(hashFullBlocks([1, 2, 3, 4], 4)[0]!)).toBe(0);
    // Once room is made the same prompt hits.
    manager.free(5);
    expect(manager.allocatePrompt(6, [1, 2, 3, 4, 5])!.numCachedTokens).toBe(4);
    checkManagerInvariants(manager);
  });
});
