/**
 * Test helpers for the paged KV cache (samplers/kv): inspection that no production path needs,
 * kept here so that the production classes carry only what the engine calls.
 *
 * Reads go through the classes' public accessors where production has one (`keyPool`,
 * `valuePool`, `blockTable`, `numTokens`, `refCount`, `numFreeBlocks`, `lookupCached`); the
 * free queue, the hash map and the per-sequence hash chains have none, so `poolInternals` and
 * `managerInternals` read those private fields by name (white-box, read-only).
 */
import type { BlockPool } from '../../samplers/kv/block-pool.js';
import type { KVCacheManager } from '../../samplers/kv/cache-manager.js';
import type { PagedKVStorage } from '../../samplers/kv/kv-storage.js';
import { hashBlock, type ParentHash } from '../../samplers/kv/prefix-hash.js';

/** The private state of a BlockPool, as block-pool.ts names it. */
interface BlockPoolInternals {
  refCounts: Int32Array;
  blockHashes: (string | null)[];
  cachedBlocks: Map<string, number>;
  prev: Int32Array;
  next: Int32Array;
  head: number;
  tail: number;
  freeCount: number;
}

/** The private state of a KVCacheManager, as cache-manager.ts names it. */
interface KVCacheManagerInternals {
  sequences: Map<number, { blockTable: number[]; numTokens: number; blockHashes: string[]; cacheEpoch: number }>;
  cacheEpoch: number;
}

/** The value NOT_LINKED of block-pool.ts: a block outside the free queue. */
const NOT_LINKED = -1;

export function poolInternals(pool: BlockPool): BlockPoolInternals {
  return pool as unknown as BlockPoolInternals;
}

export function managerInternals(manager: KVCacheManager): KVCacheManagerInternals {
  return manager as unknown as KVCacheManagerInternals;
}

/**
 * The first `numTokens` tokens' K/V of a sequence, contiguous: keys and values each
 * [numTokens, numKvHeads, headDim] flat, read from the pools through its block table.
 */
export function gatherSequence(storage: PagedKVStorage, layer: number, blockTable: readonly number[], numTokens: number): { keys: Float32Array; values: Float32Array } {
  if (!Number.isInteger(numTokens) || numTokens < 0 || numTokens > blockTable.length * storage.blockSize) {
    throw new Error(`gatherSequence: layer ${layer}: numTokens = ${numTokens} does not fit ${blockTable.length} blocks of ${storage.blockSize}`);
  }
  const keyPool = storage.keyPool(layer);
  const valuePool = storage.valuePool(layer);
  const keys = new Float32Array(numTokens * storage.tokenStride); // [numTokens, numKvHeads, headDim]
  const values = new Float32Array(numTokens * storage.tokenStride); // [numTokens, numKvHeads, headDim]
  for (let i = 0; i < Math.ceil(numTokens / storage.blockSize); i++) {
    const blockId = blockTable[i]!;
    if (!Number.isInteger(blockId) || blockId < 0 || blockId >= storage.numBlocks) throw new Error(`gatherSequence: block id ${blockId} is outside [0, ${storage.numBlocks})`);
    const numTokensInBlock = Math.min(storage.blockSize, numTokens - i * storage.blockSize);
    const source = blockId * storage.blockStride;
    const sourceEnd = source + numTokensInBlock * storage.tokenStride;
    keys.set(keyPool.subarray(source, sourceEnd), i * storage.blockStride);
    values.set(valuePool.subarray(source, sourceEnd), i * storage.blockStride);
  }
  return { keys, values };
}

/**
 * The hash chain of every full block of `tokenIds`: element i names tokens
 * [0, (i + 1) · blockSize), as the manager computes it. A trailing partial block has no hash.
 */
export function hashFullBlocks(tokenIds: readonly number[], blockSize: number, parentHash: ParentHash = null): string[] {
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new Error(`hashFullBlocks: blockSize = ${blockSize} must be a positive integer`);
  const hashes: string[] = [];
  let parent = parentHash;
  for (let i = 0; i < Math.floor(tokenIds.length / blockSize); i++) {
    parent = hashBlock(parent, tokenIds.slice(i * blockSize, (i + 1) * blockSize));
    hashes.push(parent);
  }
  return hashes;
}

/** The free queue from head (next to be allocated) to tail (freed most recently). */
export function freeBlockIds(pool: BlockPool): number[] {
  const { next, head, tail } = poolInternals(pool);
  const ids: number[] = [];
  for (let b = next[head]!; b !== tail; b = next[b]!) ids.push(b);
  return ids;
}

/** The hash a block is cached under, or null. */
export function cachedHashOf(pool: BlockPool, blockId: number): string | null {
  return poolInternals(pool).blockHashes[blockId]!;
}

/** Live sequence ids of a manager, in creation order. */
export function liveSequenceIds(manager: KVCacheManager): number[] {
  return [...managerInternals(manager).sequences.keys()];
}

/**
 * Asserts the pool's invariants; throws on the first violation.
 * 1. The free queue's links are consistent in both directions, with no block twice.
 * 2. A block is in the free queue iff its refCount is 0; no refCount is negative.
 * 3. `numFreeBlocks` equals the queue's length.
 * 4. The hash map and the per-block hashes agree both ways.
 */
export function checkPoolInvariants(pool: BlockPool): void {
  const fail = (what: string): never => {
    throw new Error(`block pool invariant violated: ${what}`);
  };
  const { prev, next, head, tail, blockHashes, cachedBlocks } = poolInternals(pool);
  const inQueue = new Uint8Array(pool.numBlocks);
  let queueLength = 0;
  let before = head;
  for (let b = next[head]!; b !== tail; b = next[b]!) {
    if (b < 0 || b >= pool.numBlocks) fail(`free queue links to ${b}, not a block id`);
    if (inQueue[b]) fail(`block ${b} appears twice in the free queue`);
    if (prev[b] !== before) fail(`block ${b}: prev link ${prev[b]} != ${before}`);
    inQueue[b] = 1;
    queueLength++;
    before = b;
  }
  if (prev[tail] !== before) fail(`tail's prev link ${prev[tail]} != ${before}`);
  if (queueLength !== pool.numFreeBlocks) fail(`numFreeBlocks ${pool.numFreeBlocks} != free-queue length ${queueLength}`);
  for (let b = 0; b < pool.numBlocks; b++) {
    const count = pool.refCount(b);
    if (count < 0) fail(`block ${b} has refCount ${count}`);
    if (inQueue[b] && count !== 0) fail(`block ${b} is in the free queue with refCount ${count}`);
    if (!inQueue[b] && count === 0) fail(`block ${b} has refCount 0 but is not in the free queue (leaked)`);
    if (!inQueue[b] && (prev[b] !== NOT_LINKED || next[b] !== NOT_LINKED)) fail(`block ${b} is in use but still linked`);
    const hash = blockHashes[b];
    if (hash !== null && hash !== undefined && pool.lookupCached(hash) !== b) fail(`block ${b} carries a hash that does not map back to it`);
  }
  if (cachedBlocks.size !== pool.numCachedBlocks) fail(`numCachedBlocks ${pool.numCachedBlocks} != hash map size ${cachedBlocks.size}`);
  for (const [hash, b] of cachedBlocks) {
    if (blockHashes[b] !== hash) fail(`cached hash maps to block ${b}, which carries ${blockHashes[b]}`);
  }
}

/**
 * Asserts the manager's invariants on top of the pool's; throws on the first violation.
 * 1. Every block's refCount equals the number of table entries (over live sequences) naming it.
 * 2. Each table has exactly ⌈numTokens / blockSize⌉ blocks, with no block twice in one table.
 * 3. A sequence's offered hashes cover only full blocks, and an in-cache block of its table
 *    is cached under the hash the sequence computed for it.
 * 4. The live-sequence count of `stats()` agrees with the tables.
 */
export function checkManagerInvariants(manager: KVCacheManager): void {
  checkPoolInvariants(manager.blockPool);
  const fail = (what: string): never => {
    throw new Error(`KV cache manager invariant violated: ${what}`);
  };
  const { sequences, cacheEpoch } = managerInternals(manager);
  const references = new Int32Array(manager.numBlocks);
  for (const [seqId, seq] of sequences) {
    const blockTable = manager.blockTable(seqId);
    const numTokens = manager.numTokens(seqId);
    if (numTokens < 1) fail(`sequence ${seqId} has ${numTokens} tokens`);
    if (blockTable.length !== Math.ceil(numTokens / manager.blockSize)) fail(`sequence ${seqId} has ${blockTable.length} blocks for ${numTokens} tokens`);
    if (new Set(blockTable).size !== blockTable.length) fail(`sequence ${seqId} names a block twice`);
    if (seq.blockHashes.length > Math.floor(numTokens / manager.blockSize)) fail(`sequence ${seqId} hashed a partial block`);
    for (const blockId of blockTable) references[blockId]++;
    if (seq.cacheEpoch === cacheEpoch) {
      seq.blockHashes.forEach((hash, i) => {
        const cachedAs = cachedHashOf(manager.blockPool, blockTable[i]!);
        if (cachedAs !== null && cachedAs !== hash) fail(`sequence ${seqId}: block ${blockTable[i]} is cached under another prefix`);
      });
    }
  }
  for (let blockId = 0; blockId < manager.numBlocks; blockId++) {
    const refCount = manager.blockPool.refCount(blockId);
    if (refCount !== references[blockId]) fail(`block ${blockId} has refCount ${refCount} but ${references[blockId]} table entries`);
  }
  if (manager.stats().numSequences !== sequences.size) fail(`stats() counts ${manager.stats().numSequences} sequences, the tables ${sequences.size}`);
}
