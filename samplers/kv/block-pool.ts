/**
 * The block pool: which KV blocks are in use, by how many sequences, and which hold a cached
 * prefix (vLLM v1 `core/block_pool.py` + the free queue of `kv_cache_utils.py`).
 *
 * Every block is in exactly one of two states:
 * - in use: `refCount > 0`, out of the free queue; one reference per block-table entry;
 * - free: `refCount == 0`, in the free queue. A free block may still carry the hash of the
 *   full block it holds, so a later prompt with the same prefix can take it back (a hit)
 *   until allocation evicts it.
 *
 * The free queue doubles as the LRU order of the prefix cache: allocation takes blocks from the
 * head, and a freed block that holds a cached prefix is appended at the tail, so the cached
 * block freed longest ago is evicted first. A freed block without a hash holds nothing worth
 * keeping and goes to the head, where it is reused before any cached block is evicted (vLLM
 * appends those at the tail too; this only spares cached blocks).
 *
 * The pool knows nothing of tokens or sequences; `KVCacheManager` (cache-manager.ts) builds on it.
 */

export interface BlockPoolOptions {
  /** Number of KV blocks in the pool; fixed for its lifetime (the storage is preallocated). */
  numBlocks: number;
  /** Tokens per block. The pool only reports it; the manager does the arithmetic. */
  blockSize: number;
}

/** Marks a block that is not linked into the free queue (its `prev`/`next` entries). */
const NOT_LINKED = -1;

export class BlockPool {
  readonly numBlocks: number;
  readonly blockSize: number;

  /** Reference count per block: the number of block-table entries that point at it. */
  private readonly refCounts: Int32Array;
  /** The hash of the full block each block holds, or null when it is not in the prefix cache. */
  private readonly blockHashes: (string | null)[];
  /** Cached full blocks: hash → block id. Exactly the blocks whose `blockHashes` entry is set. */
  private readonly cachedBlocks = new Map<string, number>();

  /**
   * The free queue as an intrusive doubly-linked list over block ids: `prev[b]`/`next[b]` are
   * the neighbours of block b. We implement this instead of an array or a deque because a
   * prefix hit on a free block must take it out of the *middle* of the queue, in O(1).
   * Two sentinels, `head = numBlocks` and `tail = numBlocks + 1`, remove the end cases.
   */
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private readonly head: number;
  private readonly tail: number;
  private freeCount: number;

  /** Prefix-cache lookups (in blocks) and how many of them hit; recorded by the manager. */
  private cacheQueries = 0;
  private cacheHits = 0;
  /** Cached blocks whose hash was dropped because allocation reused the block. */
  private evictions = 0;

  constructor(options: BlockPoolOptions) {
    const { numBlocks, blockSize } = options;
    if (!Number.isInteger(numBlocks) || numBlocks < 1) {
      throw new Error(`samplers/kv/block-pool: numBlocks = ${numBlocks} must be a positive integer`);
    }
    if (!Number.isInteger(blockSize) || blockSize < 1) {
      throw new Error(`samplers/kv/block-pool: blockSize = ${blockSize} must be a positive integer`);
    }
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.refCounts = new Int32Array(numBlocks);
    this.blockHashes = new Array<string | null>(numBlocks).fill(null);
    this.prev = new Int32Array(numBlocks + 2).fill(NOT_LINKED);
    this.next = new Int32Array(numBlocks + 2).fill(NOT_LINKED);
    this.head = numBlocks;
    this.tail = numBlocks + 1;
    this.next[this.head] = this.tail;
    this.prev[this.tail] = this.head;
    this.freeCount = 0;
    // Ascending ids from the head: a fresh pool hands out blocks 0, 1, 2, …
    for (let blockId = 0; blockId < numBlocks; blockId++) this.linkBefore(blockId, this.tail);
  }

  /** Blocks in the free queue (including free blocks that still hold a cached prefix). */
  get numFreeBlocks(): number {
    return this.freeCount;
  }

  /** Blocks currently registered in the prefix cache (in use or free). */
  get numCachedBlocks(): number {
    return this.cachedBlocks.size;
  }

  get numCacheQueries(): number {
    return this.cacheQueries;
  }

  get numCacheHits(): number {
    return this.cacheHits;
  }

  get numEvictions(): number {
    return this.evictions;
  }

  refCount(blockId: number): number {
    this.checkBlockId(blockId, 'refCount');
    return this.refCounts[blockId]!;
  }

  /**
   * Takes `numBlocksToAllocate` blocks from the head of the free queue, each with refCount 1.
   * A taken block that still held a cached prefix is evicted (its hash dropped).
   * All-or-nothing: null (and nothing changed) when fewer blocks are free.
   */
  allocate(numBlocksToAllocate: number): number[] | null {
    if (!Number.isInteger(numBlocksToAllocate) || numBlocksToAllocate < 0) {
      throw new Error(`samplers/kv/block-pool: allocate(${numBlocksToAllocate}): count must be a non-negative integer`);
    }
    if (numBlocksToAllocate > this.freeCount) return null;
    const blockIds: number[] = [];
    for (let i = 0; i < numBlocksToAllocate; i++) {
      const blockId = this.next[this.head]!;
      this.unlink(blockId);
      const hash = this.blockHashes[blockId];
      if (hash !== null && hash !== undefined) {
        this.cachedBlocks.delete(hash);
        this.blockHashes[blockId] = null;
        this.evictions++;
      }
      this.refCounts[blockId] = 1;
      blockIds.push(blockId);
    }
    return blockIds;
  }

  /**
   * Drops one reference to each block, in the given order. A block whose count reaches 0
   * joins the free queue: at the tail when it holds a cached prefix (so it can still be hit,
   * and is evicted in least-recently-freed order), at the head otherwise.
   * Throws on a block that is already free (a double free is always a bookkeeping bug).
   */
  free(blockIds: readonly number[]): void {
    for (const blockId of blockIds) {
      this.checkBlockId(blockId, 'free');
      const count = this.refCounts[blockId]!;
      if (count === 0) throw new Error(`samplers/kv/block-pool: free: block ${blockId} is already free (double free)`);
      this.refCounts[blockId] = count - 1;
      if (count === 1) {
        if (this.blockHashes[blockId] !== null) this.linkBefore(blockId, this.tail);
        else this.linkAfter(blockId, this.head);
      }
    }
  }

  /** Adds one reference to each block; each must already be in use (sharing a live block, e.g. a fork). */
  incRef(blockIds: readonly number[]): void {
    for (const blockId of blockIds) {
      this.checkBlockId(blockId, 'incRef');
      if (this.refCounts[blockId] === 0) {
        throw new Error(`samplers/kv/block-pool: incRef: block ${blockId} is free; take a cached free block with touch()`);
      }
    }
    for (const blockId of blockIds) this.refCounts[blockId]++;
  }

  /**
   * Adds one reference to each block after a prefix hit. A hit on a free cached block takes it
   * out of the free queue (O(1), from wherever it sits), which also saves it from eviction.
   */
  touch(blockIds: readonly number[]): void {
    for (const blockId of blockIds) {
      this.checkBlockId(blockId, 'touch');
      if (this.refCounts[blockId] === 0 && this.blockHashes[blockId] === null) {
        throw new Error(`samplers/kv/block-pool: touch: block ${blockId} is free and holds no cached prefix`);
      }
    }
    for (const blockId of blockIds) {
      if (this.refCounts[blockId] === 0) this.unlink(blockId);
      this.refCounts[blockId]++;
    }
  }

  /** The block cached under `hash`, in use or free, or undefined. Changes nothing. */
  lookupCached(hash: string): number | undefined {
    return this.cachedBlocks.get(hash);
  }

  /** Records `numQueried` prefix-cache lookups of which `numHit` hit (for the hit-rate stats). */
  recordCacheQueries(numQueried: number, numHit: number): void {
    if (!Number.isInteger(numQueried) || !Number.isInteger(numHit) || numHit < 0 || numHit > numQueried) {
      throw new Error(`samplers/kv/block-pool: recordCacheQueries(${numQueried}, ${numHit}): need 0 <= numHit <= numQueried`);
    }
    this.cacheQueries += numQueried;
    this.cacheHits += numHit;
  }

  /**
   * Registers an in-use full block under `hash`. Returns false (and caches nothing) when another
   * block is already cached under the same hash: two sequences computed the same prefix
   * independently, and the first copy stays the one that is hit. Re-caching a block under its
   * own hash is a no-op that returns true.
   */
  cacheBlock(blockId: number, hash: string): boolean {
    this.checkBlockId(blockId, 'cacheBlock');
    if (this.refCounts[blockId] === 0) {
      throw new Error(`samplers/kv/block-pool: cacheBlock: block ${blockId} is free; only in-use blocks that were just filled can be cached`);
    }
    const current = this.blockHashes[blockId];
    if (current === hash) return true;
    if (current !== null) {
      throw new Error(`samplers/kv/block-pool: cacheBlock: block ${blockId} is already cached under a different hash`);
    }
    if (this.cachedBlocks.has(hash)) return false;
    this.cachedBlocks.set(hash, blockId);
    this.blockHashes[blockId] = hash;
    return true;
  }

  /**
   * Forgets every cached prefix (call when the weights change: cached keys and values were
   * computed by the old model). Blocks in use stay in use; free blocks stay free.
   */
  resetPrefixCache(): void {
    for (const blockId of this.cachedBlocks.values()) this.blockHashes[blockId] = null;
    this.cachedBlocks.clear();
  }

  private checkBlockId(blockId: number, where: string): void {
    if (!Number.isInteger(blockId) || blockId < 0 || blockId >= this.numBlocks) {
      throw new Error(`samplers/kv/block-pool: ${where}: block id ${blockId} is outside [0, ${this.numBlocks})`);
    }
  }

  /** Inserts a free block just before `anchor` (the tail sentinel, for an append). */
  private linkBefore(blockId: number, anchor: number): void {
    const before = this.prev[anchor]!;
    this.link(blockId, before, anchor);
  }

  /** Inserts a free block just after `anchor` (the head sentinel, for a push to the front). */
  private linkAfter(blockId: number, anchor: number): void {
    const after = this.next[anchor]!;
    this.link(blockId, anchor, after);
  }

  private link(blockId: number, before: number, after: number): void {
    if (this.prev[blockId] !== NOT_LINKED) throw new Error(`samplers/kv/block-pool: block ${blockId} is already in the free queue`);
    this.prev[blockId] = before;
    this.next[blockId] = after;
    this.next[before] = blockId;
    this.prev[after] = blockId;
    this.freeCount++;
  }

  /** Removes a block from anywhere in the free queue in O(1). */
  private unlink(blockId: number): void {
    const before = this.prev[blockId]!;
    const after = this.next[blockId]!;
    if (before === NOT_LINKED) throw new Error(`samplers/kv/block-pool: block ${blockId} is not in the free queue`);
    this.next[before] = after;
    this.prev[after] = before;
    this.prev[blockId] = NOT_LINKED;
    this.next[blockId] = NOT_LINKED;
    this.freeCount--;
  }
}
