import { describe, expect, it } from 'vitest';
import { BlockPool } from '../../../samplers/kv/block-pool.js';
import { cachedHashOf, checkPoolInvariants, freeBlockIds, poolInternals } from '../helpers.js';

function newPool(numBlocks: number): BlockPool {
  return new BlockPool({ numBlocks, blockSize: 4 });
}

describe('BlockPool', () => {
  it('hands out blocks from the head with refCount 1, all or nothing', () => {
    const pool = newPool(5);
    expect(pool.allocate(2)).toEqual([0, 1]);
    expect(pool.numFreeBlocks).toBe(3);
    expect(pool.refCount(0)).toBe(1);
    expect(pool.allocate(4)).toBeNull(); // only 3 free
    expect(pool.numFreeBlocks).toBe(3);
    expect(freeBlockIds(pool)).toEqual([2, 3, 4]);
    expect(pool.allocate(0)).toEqual([]);
    expect(pool.allocate(3)).toEqual([2, 3, 4]);
    expect(pool.allocate(1)).toBeNull();
    checkPoolInvariants(pool);
  });

  it('counts references and frees a block only when the last one is dropped', () => {
    const pool = newPool(3);
    const [a] = pool.allocate(1)!;
    pool.incRef([a!, a!]);
    expect(pool.refCount(a!)).toBe(3);
    pool.free([a!]);
    pool.free([a!]);
    expect(pool.numFreeBlocks).toBe(2);
    pool.free([a!]);
    expect(pool.refCount(a!)).toBe(0);
    expect(pool.numFreeBlocks).toBe(3);
    expect(() => pool.free([a!])).toThrow('block 0 is already free (double free)');
    expect(() => pool.incRef([a!])).toThrow('block 0 is free');
    checkPoolInvariants(pool);
  });

  it('puts freed uncached blocks at the head and freed cached blocks at the tail', () => {
    const pool = newPool(4);
    const ids = pool.allocate(4)!;
    expect(pool.cacheBlock(ids[1]!, 'h1')).toBe(true);
    pool.free([ids[1]!, ids[0]!, ids[2]!]);
    // 0 then 2 pushed to the head (uncached); 1 appended at the tail (cached).
    expect(freeBlockIds(pool)).toEqual([2, 0, 1]);
    // Allocation uses the uncached blocks before evicting the cached one.
    expect(pool.allocate(2)).toEqual([2, 0]);
    expect(pool.lookupCached('h1')).toBe(1);
    expect(pool.numEvictions).toBe(0);
    checkPoolInvariants(pool);
  });

  it('evicts cached free blocks least recently freed first', () => {
    const pool = newPool(4);
    const ids = pool.allocate(4)!;
    ids.forEach((id) => pool.cacheBlock(id, `h${id}`));
    pool.free([2]);
    pool.free([0]);
    pool.free([3]);
    pool.free([1]);
    expect(freeBlockIds(pool)).toEqual([2, 0, 3, 1]);
    expect(pool.allocate(1)).toEqual([2]);
    expect(pool.lookupCached('h2')).toBeUndefined();
    expect(cachedHashOf(pool, 2)).toBeNull();
    expect(pool.numEvictions).toBe(1);
    expect(pool.allocate(1)).toEqual([0]);
    expect(pool.lookupCached('h0')).toBeUndefined();
    expect(pool.lookupCached('h3')).toBe(3);
    expect(pool.lookupCached('h1')).toBe(1);
    expect(pool.numEvictions).toBe(2);
    expect(pool.numCachedBlocks).toBe(2);
    checkPoolInvariants(pool);
  });

  it('touch takes a free cached block out of the middle of the queue', () => {
    const pool = newPool(5);
    const ids = pool.allocate(5)!;
    ids.forEach((id) => pool.cacheBlock(id, `h${id}`));
    pool.free([0, 1, 2, 3, 4]);
    const hit = pool.lookupCached('h2')!;
    expect(hit).toBe(2);
    pool.touch([hit]);
    expect(pool.refCount(2)).toBe(1);
    expect(freeBlockIds(pool)).toEqual([0, 1, 3, 4]);
    checkPoolInvariants(pool);
    // Touching a live block just adds a reference; the hash survives while in use.
    pool.touch([2]);
    expect(pool.refCount(2)).toBe(2);
    expect(pool.allocate(4)).toEqual([0, 1, 3, 4]);
    expect(pool.lookupCached('h2')).toBe(2);
    expect(pool.numEvictions).toBe(4);
    checkPoolInvariants(pool);
  });

  it('refuses to touch a free block that holds no cached prefix', () => {
    const pool = newPool(2);
    expect(() => pool.touch([1])).toThrow('block 1 is free and holds no cached prefix');
  });

  it('caches only in-use blocks and keeps the first of two blocks with the same hash', () => {
    const pool = newPool(3);
    const [a, b] = pool.allocate(2)!;
    expect(pool.cacheBlock(a!, 'same')).toBe(true);
    expect(pool.cacheBlock(a!, 'same')).toBe(true); // no-op
    expect(pool.cacheBlock(b!, 'same')).toBe(false);
    expect(cachedHashOf(pool, b!)).toBeNull();
    expect(pool.lookupCached('same')).toBe(a);
    expect(() => pool.cacheBlock(a!, 'other')).toThrow('already cached under a different hash');
    expect(() => pool.cacheBlock(2, 'x')).toThrow('block 2 is free');
    checkPoolInvariants(pool);
  });

  it('resetPrefixCache drops every hash, in use or free', () => {
    const pool = newPool(3);
    const [a, b] = pool.allocate(2)!;
    pool.cacheBlock(a!, 'ha');
    pool.cacheBlock(b!, 'hb');
    pool.free([b!]);
    pool.resetPrefixCache();
    expect(pool.lookupCached('ha')).toBeUndefined();
    expect(pool.lookupCached('hb')).toBeUndefined();
    expect(cachedHashOf(pool, a!)).toBeNull();
    expect(pool.numCachedBlocks).toBe(0);
    expect(pool.refCount(a!)).toBe(1);
    expect(pool.numFreeBlocks).toBe(2);
    checkPoolInvariants(pool);
    // The freed block, now without a hash, is allocated without counting an eviction.
    pool.allocate(2);
    expect(pool.numEvictions).toBe(0);
  });

  it('records cache queries and hits', () => {
    const pool = newPool(2);
    pool.recordCacheQueries(3, 2);
    pool.recordCacheQueries(1, 0);
    expect(pool.numCacheQueries).toBe(4);
    expect(pool.numCacheHits).toBe(2);
    expect(() => pool.recordCacheQueries(1, 2)).toThrow('need 0 <= numHit <= numQueried');
  });

  it('checkPoolInvariants detects a corrupted reference count and a corrupted hash map', () => {
    const pool = newPool(3);
    pool.allocate(1);
    const internals = poolInternals(pool);
    internals.refCounts[2] = 1; // block 2 is in the free queue
    expect(() => checkPoolInvariants(pool)).toThrow('block 2 is in the free queue with refCount 1');
    internals.refCounts[2] = 0;
    internals.refCounts[0] = 0; // block 0 is in use, not queued
    expect(() => checkPoolInvariants(pool)).toThrow('block 0 has refCount 0 but is not in the free queue');
    internals.refCounts[0] = 1;
    checkPoolInvariants(pool);
    internals.cachedBlocks.set('ghost', 0);
    expect(() => checkPoolInvariants(pool)).toThrow('cached hash maps to block 0');
  });

  it('rejects bad sizes and block ids with one-line errors', () => {
    expect(() => new BlockPool({ numBlocks: 0, blockSize: 4 })).toThrow('numBlocks = 0');
    expect(() => new BlockPool({ numBlocks: 2, blockSize: 1.5 })).toThrow('blockSize = 1.5');
    const pool = newPool(2);
    expect(() => pool.free([2])).toThrow('free: block id 2 is outside [0, 2)');
    expect(() => pool.allocate(-1)).toThrow('allocate(-1)');
  });
});
