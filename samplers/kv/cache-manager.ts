/**
 * The KV cache manager: block tables per sequence on top of the block pool, the API the
 * scheduler (samplers/scheduler.ts) calls (vLLM v1 `core/kv_cache_manager.py`, PagedAttention,
 * Kwon et al. 2023), and the one owner of the cache statistics (`stats()`).
 *
 * A sequence's keys and values live in fixed-size blocks; its block table lists them in order,
 * so position p sits in block `table[⌊p / blockSize⌋]` at offset `p mod blockSize`, and its
 * flat slot in the storage is `blockId · blockSize + offset`. Only the last block of a table
 * can be partly filled.
 *
 * Sharing, the reason for all this (rejection sampling draws K = 10–30 completions of one prompt):
 * - `fork` gives each child the parent's table, one more reference per block, no copy.
 * - A block several sequences point at is never written. The one block that can still be
 *   written, the partly filled last one, is copied on the first append (copy-on-write) and
 *   the copy is reported so the storage duplicates the data before the new tokens go in.
 * - Full blocks are registered in a prefix cache under a hash chain (prefix-hash.ts); a later
 *   prompt with the same beginning takes those blocks instead of recomputing them.
 *
 * Protocol for the scheduler and the engine (the order matters):
 * 1. `allocatePrompt` → write K/V for positions [numCachedTokens, promptLength) into
 *    `slotMapping(seq, numCachedTokens, promptLength)` (RoPE positions continue from
 *    numCachedTokens) → `cacheFullBlocks(seq, promptTokens)`.
 * 2. Each decode step: `appendSlots(seq, n)` → `storage.copyBlocks(copies)` at once, before
 *    anything else writes to the pool → write the n new positions → `cacheFullBlocks(seq, tokens)`.
 * 3. `free(seq)` when it finishes; `resetPrefixCache()` when the weights change.
 * A null/false result means the pool is full right now: nothing changed, the caller waits for
 * running sequences to finish and tries again (the scheduler's admission control makes the
 * sampling engine never meet one).
 */
import { z } from 'zod';
import { BlockPool } from './block-pool.js';
import { hashBlock } from './prefix-hash.js';

/** Slot indices are Int32 (the slot mapping is an Int32Array), which bounds the pool's token capacity. */
const MAX_SLOTS = 0x7fffffff;

export const kvCacheManagerOptionsSchema = z
  .object({
    numBlocks: z
      .number()
      .int()
      .positive()
      .describe('Blocks in the preallocated pool; the cache holds at most numBlocks · blockSize tokens across all sequences.'),
    blockSize: z
      .number()
      .int()
      .positive()
      .default(16)
      .describe('Tokens per block. 16 as in vLLM: small enough that a partly filled last block wastes little, large enough that tables stay short.'),
    enablePrefixCaching: z
      .boolean()
      .default(true)
      .describe('Reuse full blocks across prompts that share a beginning (hash-chain lookup); false computes every prompt from scratch.'),
  })
  .strict()
  .refine((options) => options.numBlocks * options.blockSize <= MAX_SLOTS, {
    message: 'numBlocks · blockSize must fit an Int32 slot index',
  });

export type KVCacheManagerOptions = z.input<typeof kvCacheManagerOptionsSchema>;

/** What `allocatePrompt` hands the engine. */
export interface PromptAllocation {
  /**
   * Leading prompt tokens whose K/V the prefix cache already holds: a multiple of blockSize,
   * at most promptLength − 1. The engine computes positions [numCachedTokens, promptLength).
   */
  numCachedTokens: number;
  /** The sequence's block table (the live array, read-only to callers). */
  blockTable: readonly number[];
}

/** A block copy the storage must perform: block `dst` becomes a copy of block `src`. */
export interface BlockCopy {
  src: number;
  dst: number;
}

/** What `appendSlots` hands the engine. */
export interface SlotAppend {
  /** Blocks appended at the end of the table for the new tokens. */
  newBlocks: number[];
  /** Copy-on-write: the shared partial last block was replaced by a private copy; copy the data first. */
  copies: BlockCopy[];
}

export interface KVCacheStats {
  numBlocks: number;
  /** Blocks in the free queue, including free blocks that still hold a cached prefix. */
  numFreeBlocks: number;
  /** Blocks referenced by at least one live sequence. */
  numUsedBlocks: number;
  /** Most blocks in use at once since construction or the last `resetPeakUsedBlocks()`. */
  peakUsedBlocks: number;
  /** Blocks registered in the prefix cache (in use or free). */
  numCachedBlocks: number;
  /** Prompt tokens over all successful `allocatePrompt` calls. */
  numPromptTokens: number;
  /** Of those, the leading tokens served from the prefix cache (not recomputed). */
  numCachedPromptTokens: number;
  /** numCachedPromptTokens / numPromptTokens (0 before any prompt). */
  cacheHitRate: number;
  /** Prefix-cache lookups, in blocks, and how many hit. */
  numCacheQueries: number;
  numCacheHits: number;
  /** Cached blocks whose contents were given up to make room. */
  numEvictions: number;
  /** allocatePrompt/appendSlots/fork calls that found the pool too full (nothing changed; the caller waits). */
  numAllocationFailures: number;
  /** Live sequences. */
  numSequences: number;
}

interface SequenceState {
  /** Block ids in position order. */
  blockTable: number[];
  /** Token slots allocated: positions [0, numTokens) have a place in the table. */
  numTokens: number;
  /** Hash chain of the leading full blocks already offered to the prefix cache. */
  blockHashes: string[];
  /** The prefix-cache generation the sequence's K/V were computed in (see `resetPrefixCache`). */
  cacheEpoch: number;
}

export class KVCacheManager {
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly enablePrefixCaching: boolean;
  /** The underlying pool, for inspection; change it only through the manager. */
  readonly blockPool: BlockPool;

  private readonly sequences = new Map<number, SequenceState>();
  private cacheEpoch = 0;
  private peakUsed = 0;
  private allocationFailures = 0;
  private numPromptTokens = 0;
  private numCachedPromptTokens = 0;

  constructor(options: KVCacheManagerOptions) {
    const parsed = kvCacheManagerOptionsSchema.safeParse(options);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new Error(`samplers/kv/cache-manager: KVCacheManager options: ${issue.path.join('.') || '(options)'}: ${issue.message}`);
    }
    this.numBlocks = parsed.data.numBlocks;
    this.blockSize = parsed.data.blockSize;
    this.enablePrefixCaching = parsed.data.enablePrefixCaching;
    this.blockPool = new BlockPool({ numBlocks: this.numBlocks, blockSize: this.blockSize });
  }

  /**
   * Gives a new sequence a block table for its prompt, reusing cached full blocks of the
   * longest cached prefix (lookups stop at the first miss: block i's hash names everything
   * before it, so nothing after a miss can hit).
   *
   * A full hit still recomputes the last prompt token, whose logits start decoding. Choice
   * made here (as vLLM v1): only blocks lying entirely within the first promptLength − 1
   * tokens are looked up. When promptLength is a multiple of blockSize, the last block is
   * therefore allocated fresh and recomputed whole (blockSize tokens instead of 1), which
   * keeps every written position in a block this sequence owns alone — no block is allocated
   * twice and nothing cached is ever written over.
   *
   * Returns null (nothing changed) when the pool cannot hold the prompt now. Throws when the
   * prompt needs more blocks than the whole pool, since waiting could never help.
   */
  allocatePrompt(seqId: number, tokenIds: readonly number[]): PromptAllocation | null {
    this.checkNewSeqId(seqId, 'allocatePrompt');
    const numTokens = tokenIds.length;
    if (numTokens < 1) throw new Error(`samplers/kv/cache-manager: allocatePrompt: sequence ${seqId} has an empty prompt`);
    const numBlocksNeeded = Math.ceil(numTokens / this.blockSize);
    this.checkFitsPool(seqId, numBlocksNeeded, 'allocatePrompt');

    // 1. The longest cached prefix of full blocks, ending before the last token.
    const hitHashes: string[] = [];
    const hitBlocks: number[] = [];
    let numQueried = 0;
    if (this.enablePrefixCaching) {
      const maxHitBlocks = Math.floor((numTokens - 1) / this.blockSize);
      let parentHash: string | null = null;
      for (let i = 0; i < maxHitBlocks; i++) {
        const hash = hashBlock(parentHash, tokenIds.slice(i * this.blockSize, (i + 1) * this.blockSize));
        numQueried++;
        const blockId = this.blockPool.lookupCached(hash);
        if (blockId === undefined) break;
        hitHashes.push(hash);
        hitBlocks.push(blockId);
        parentHash = hash;
      }
    }

    // 2. Capacity: a hit on a free cached block takes it out of the free queue as well.
    let numFreeHits = 0;
    for (const blockId of hitBlocks) if (this.blockPool.refCount(blockId) === 0) numFreeHits++;
    const numNewBlocks = numBlocksNeeded - hitBlocks.length;
    if (numNewBlocks + numFreeHits > this.blockPool.numFreeBlocks) {
      this.allocationFailures++;
      return null;
    }

    // 3. Commit. Touch the hits before allocating, so allocation cannot evict them.
    this.blockPool.touch(hitBlocks);
    const newBlocks = this.blockPool.allocate(numNewBlocks)!; // capacity checked above
    this.blockPool.recordCacheQueries(numQueried, hitBlocks.length);
    const numCachedTokens = hitBlocks.length * this.blockSize;
    this.numPromptTokens += numTokens;
    this.numCachedPromptTokens += numCachedTokens;
    const blockTable = [...hitBlocks, ...newBlocks];
    this.sequences.set(seqId, { blockTable, numTokens, blockHashes: hitHashes, cacheEpoch: this.cacheEpoch });
    this.updatePeak();
    return { numCachedTokens, blockTable };
  }

  /**
   * Makes room for `numNewTokens` more tokens at the end of a sequence. If its partly filled
   * last block is shared (after a fork), the sequence first gets a private copy of it
   * (copy-on-write, reported in `copies`) so its new tokens never land in another sequence's
   * memory. The last holder of a shared block keeps the original and writes in place.
   * Returns null (nothing changed) when the pool is too full.
   */
  appendSlots(seqId: number, numNewTokens: number): SlotAppend | null {
    const seq = this.getSequence(seqId, 'appendSlots');
    if (!Number.isInteger(numNewTokens) || numNewTokens < 0) {
      throw new Error(`samplers/kv/cache-manager: appendSlots: sequence ${seqId}: numNewTokens = ${numNewTokens} must be a non-negative integer`);
    }
    const numTokens = seq.numTokens + numNewTokens;
    const numBlocksTotal = Math.ceil(numTokens / this.blockSize);
    this.checkFitsPool(seqId, numBlocksTotal, 'appendSlots');
    const lastIndex = seq.blockTable.length - 1;
    const lastBlock = seq.blockTable[lastIndex]!;
    const needsCopy = numNewTokens > 0 && seq.numTokens % this.blockSize !== 0 && this.blockPool.refCount(lastBlock) > 1;
    const numGrowBlocks = numBlocksTotal - seq.blockTable.length;
    const allocated = this.blockPool.allocate(numGrowBlocks + (needsCopy ? 1 : 0));
    if (allocated === null) {
      this.allocationFailures++;
      return null;
    }
    const copies: BlockCopy[] = [];
    if (needsCopy) {
      const copyBlock = allocated[0]!;
      this.blockPool.free([lastBlock]); // refCount > 1: the other holders keep it
      seq.blockTable[lastIndex] = copyBlock;
      copies.push({ src: lastBlock, dst: copyBlock });
    }
    const newBlocks = needsCopy ? allocated.slice(1) : allocated;
    seq.blockTable.push(...newBlocks);
    seq.numTokens = numTokens;
    this.updatePeak();
    return { newBlocks, copies };
  }

  /**
   * Starts each child as a copy of the parent: same tokens, same blocks (one more reference
   * each), no data copied. The shared partial last block is copied lazily by `appendSlots`.
   *
   * Admission check, not a reservation: returns false (nothing changed) when fewer free blocks
   * exist than children, because each child's first one-token append needs one block (its
   * private copy of the partial last block, or a fresh block when the last block is full).
   * Blocks free now may still be taken by others before that append, which then returns null
   * and the engine waits.
   */
  fork(parentSeqId: number, childSeqIds: readonly number[]): boolean {
    const parent = this.getSequence(parentSeqId, 'fork');
    const seen = new Set<number>();
    for (const childSeqId of childSeqIds) {
      this.checkNewSeqId(childSeqId, 'fork');
      if (seen.has(childSeqId)) throw new Error(`samplers/kv/cache-manager: fork: child sequence ${childSeqId} is listed twice`);
      seen.add(childSeqId);
    }
    if (childSeqIds.length > this.blockPool.numFreeBlocks) {
      this.allocationFailures++;
      return false;
    }
    for (const childSeqId of childSeqIds) {
      this.blockPool.incRef(parent.blockTable);
      this.sequences.set(childSeqId, {
        blockTable: [...parent.blockTable],
        numTokens: parent.numTokens,
        blockHashes: [...parent.blockHashes],
        cacheEpoch: parent.cacheEpoch,
      });
    }
    return true;
  }

  /**
   * Registers the sequence's full blocks in the prefix cache once their K/V are written.
   * `tokenIds` are the sequence's tokens from position 0 (prompt and generated), as far as
   * their K/V have been written; only blocks not offered before are hashed. A block whose
   * prefix another block already caches stays uncached (the first copy is the one hit).
   * Sequences whose K/V predate the last `resetPrefixCache` (old weights) register nothing.
   */
  cacheFullBlocks(seqId: number, tokenIds: readonly number[]): void {
    const seq = this.getSequence(seqId, 'cacheFullBlocks');
    if (tokenIds.length > seq.numTokens) {
      throw new Error(
        `samplers/kv/cache-manager: cacheFullBlocks: sequence ${seqId}: ${tokenIds.length} tokens given but only ${seq.numTokens} slots allocated`,
      );
    }
    if (!this.enablePrefixCaching || seq.cacheEpoch !== this.cacheEpoch) return;
    const numFullBlocks = Math.floor(tokenIds.length / this.blockSize);
    let parentHash = seq.blockHashes.length > 0 ? seq.blockHashes[seq.blockHashes.length - 1]! : null;
    for (let i = seq.blockHashes.length; i < numFullBlocks; i++) {
      const hash = hashBlock(parentHash, tokenIds.slice(i * this.blockSize, (i + 1) * this.blockSize));
      this.blockPool.cacheBlock(seq.blockTable[i]!, hash);
      seq.blockHashes.push(hash);
      parentHash = hash;
    }
  }

  /**
   * Releases a finished sequence's blocks. They are freed last block first, so that among a
   * sequence's cached blocks the deepest (least likely to be shared by another prompt) sit
   * nearer the head of the free queue and are evicted first.
   */
  free(seqId: number): void {
    const seq = this.getSequence(seqId, 'free');
    this.blockPool.free([...seq.blockTable].reverse());
    this.sequences.delete(seqId);
  }

  /**
   * Flat storage slots for positions [fromPos, toPos): `blockId · blockSize + offset`, the
   * index `PagedKVStorage.write` takes.
   */
  slotMapping(seqId: number, fromPos: number, toPos: number): Int32Array {
    const seq = this.getSequence(seqId, 'slotMapping');
    if (!Number.isInteger(fromPos) || !Number.isInteger(toPos) || fromPos < 0 || fromPos > toPos || toPos > seq.numTokens) {
      throw new Error(`samplers/kv/cache-manager: slotMapping: sequence ${seqId}: [${fromPos}, ${toPos}) is not within [0, ${seq.numTokens})`);
    }
    const slots = new Int32Array(toPos - fromPos);
    for (let pos = fromPos; pos < toPos; pos++) {
      const blockId = seq.blockTable[Math.floor(pos / this.blockSize)]!;
      slots[pos - fromPos] = blockId * this.blockSize + (pos % this.blockSize);
    }
    return slots;
  }

  /** The sequence's block table: the live array, which `appendSlots` changes. */
  blockTable(seqId: number): readonly number[] {
    return this.getSequence(seqId, 'blockTable').blockTable;
  }

  /** Token slots allocated to the sequence. */
  numTokens(seqId: number): number {
    return this.getSequence(seqId, 'numTokens').numTokens;
  }

  /**
   * Empties the prefix cache; call whenever the weights change (every round), since cached
   * K/V belong to the old model. Running sequences keep their blocks but will not register
   * them (their K/V are from the old weights either way).
   */
  resetPrefixCache(): void {
    this.blockPool.resetPrefixCache();
    this.cacheEpoch++;
  }

  /**
   * Starts a new peak-usage window at the blocks in use now (the engine calls it at the start of
   * each `generate`, so that a call reports its own peak). Counters are cumulative: a caller
   * wanting one call's counts subtracts the stats taken before it.
   */
  resetPeakUsedBlocks(): void {
    this.peakUsed = this.numBlocks - this.blockPool.numFreeBlocks;
  }

  /** The cache statistics; the engine's per-call figures are computed from these (their one owner). */
  stats(): KVCacheStats {
    const numFreeBlocks = this.blockPool.numFreeBlocks;
    return {
      numBlocks: this.numBlocks,
      numFreeBlocks,
      numUsedBlocks: this.numBlocks - numFreeBlocks,
      peakUsedBlocks: this.peakUsed,
      numCachedBlocks: this.blockPool.numCachedBlocks,
      numPromptTokens: this.numPromptTokens,
      numCachedPromptTokens: this.numCachedPromptTokens,
      cacheHitRate: this.numPromptTokens === 0 ? 0 : this.numCachedPromptTokens / this.numPromptTokens,
      numCacheQueries: this.blockPool.numCacheQueries,
      numCacheHits: this.blockPool.numCacheHits,
      numEvictions: this.blockPool.numEvictions,
      numAllocationFailures: this.allocationFailures,
      numSequences: this.sequences.size,
    };
  }

  private getSequence(seqId: number, where: string): SequenceState {
    const seq = this.sequences.get(seqId);
    if (seq === undefined) throw new Error(`samplers/kv/cache-manager: ${where}: no live sequence ${seqId}`);
    return seq;
  }

  private checkNewSeqId(seqId: number, where: string): void {
    if (!Number.isInteger(seqId)) throw new Error(`samplers/kv/cache-manager: ${where}: sequence id ${seqId} is not an integer`);
    if (this.sequences.has(seqId)) throw new Error(`samplers/kv/cache-manager: ${where}: sequence ${seqId} already exists`);
  }

  private checkFitsPool(seqId: number, numBlocksNeeded: number, where: string): void {
    if (numBlocksNeeded > this.numBlocks) {
      throw new Error(
        `samplers/kv/cache-manager: ${where}: sequence ${seqId} needs ${numBlocksNeeded} blocks but the pool has only ${this.numBlocks}`,
      );
    }
  }

  private updatePeak(): void {
    const numUsed = this.numBlocks - this.blockPool.numFreeBlocks;
    if (numUsed > this.peakUsed) this.peakUsed = numUsed;
  }
}
