/**
 * The memory behind the paged KV cache: per layer, one preallocated keys pool and one values
 * pool, laid out [numBlocks, blockSize, numKvHeads, headDim] (vLLM's layout minus the K/V axis).
 *
 * A token's K (or V) for all heads is one contiguous run of numKvHeads · headDim floats at
 * `slot · numKvHeads · headDim`, where slot = blockId · blockSize + offset comes from
 * `KVCacheManager.slotMapping`; a whole block is one contiguous run too, so writes, copies and
 * gathers are typed-array `set`/`copyWithin` calls over runs of consecutive slots.
 * Plain Float32Arrays, not tfjs tensors: the pool is mutated in place every step, which tensors
 * (immutable) cannot do without reallocating it.
 */
import type { BlockCopy } from './cache-manager.js';

/** Slot id that marks a padded token: `write` skips it (vLLM's PAD_SLOT_ID). */
export const PAD_SLOT_ID = -1;

export interface PagedKVStorageOptions {
  /** Transformer layers; each has its own keys and values pools. */
  numLayers: number;
  /** Blocks per pool; the same count as the `KVCacheManager` that hands out the block ids. */
  numBlocks: number;
  /** Tokens per block; the same as the manager's. */
  blockSize: number;
  /** Key/value heads (grouped-query attention: fewer than query heads). */
  numKvHeads: number;
  /** Floats per head. */
  headDim: number;
}

export class PagedKVStorage {
  readonly numLayers: number;
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  /** Floats per token: numKvHeads · headDim. */
  readonly tokenStride: number;
  /** Floats per block: blockSize · numKvHeads · headDim. */
  readonly blockStride: number;

  private readonly keyPools: Float32Array[];
  private readonly valuePools: Float32Array[];

  constructor(options: PagedKVStorageOptions) {
    for (const field of ['numLayers', 'numBlocks', 'blockSize', 'numKvHeads', 'headDim'] as const) {
      const value = options[field];
      if (!Number.isInteger(value) || value < 1) {
        throw new Error(`samplers/kv/kv-storage: PagedKVStorage options: ${field} = ${value} must be a positive integer`);
      }
    }
    this.numLayers = options.numLayers;
    this.numBlocks = options.numBlocks;
    this.blockSize = options.blockSize;
    this.numKvHeads = options.numKvHeads;
    this.headDim = options.headDim;
    this.tokenStride = this.numKvHeads * this.headDim;
    this.blockStride = this.blockSize * this.tokenStride;
    const poolLength = this.numBlocks * this.blockStride; // [numBlocks, blockSize, numKvHeads, headDim]
    this.keyPools = Array.from({ length: this.numLayers }, () => new Float32Array(poolLength));
    this.valuePools = Array.from({ length: this.numLayers }, () => new Float32Array(poolLength));
  }

  /** Bytes that `numUsedBlocks` blocks occupy across all layers, keys and values. */
  bytesInUse(numUsedBlocks: number): number {
    return 2 * this.numLayers * numUsedBlocks * this.blockStride * Float32Array.BYTES_PER_ELEMENT;
  }

  /** The keys pool of a layer, [numBlocks, blockSize, numKvHeads, headDim] flat, for attention kernels. */
  keyPool(layer: number): Float32Array {
    this.checkLayer(layer, 'keyPool');
    return this.keyPools[layer]!;
  }

  /** The values pool of a layer, same layout as `keyPool`. */
  valuePool(layer: number): Float32Array {
    this.checkLayer(layer, 'valuePool');
    return this.valuePools[layer]!;
  }

  /**
   * Stores the K/V of T tokens: token t goes to slot `slotMapping[t]`; slots equal to
   * PAD_SLOT_ID are skipped. `keys` and `values` are [T, numKvHeads, headDim] flat.
   */
  write(layer: number, slotMapping: Int32Array, keys: Float32Array, values: Float32Array): void {
    this.checkLayer(layer, 'write');
    const numTokens = slotMapping.length;
    const expectedLength = numTokens * this.tokenStride;
    if (keys.length !== expectedLength) {
      throw new Error(`samplers/kv/kv-storage: write: layer ${layer}: keys has ${keys.length} floats, expected ${numTokens}·${this.numKvHeads}·${this.headDim}`);
    }
    if (values.length !== expectedLength) {
      throw new Error(`samplers/kv/kv-storage: write: layer ${layer}: values has ${values.length} floats, expected ${numTokens}·${this.numKvHeads}·${this.headDim}`);
    }
    const numSlots = this.numBlocks * this.blockSize;
    for (let t = 0; t < numTokens; t++) {
      const slot = slotMapping[t]!;
      if (slot !== PAD_SLOT_ID && (slot < 0 || slot >= numSlots)) {
        throw new Error(`samplers/kv/kv-storage: write: layer ${layer}: slotMapping[${t}] = ${slot} is outside [0, ${numSlots})`);
      }
    }
    const keyPool = this.keyPools[layer]!;
    const valuePool = this.valuePools[layer]!;
    // Copy runs of consecutive slots in one `set` each: a prefill fills whole blocks at a time.
    let t = 0;
    while (t < numTokens) {
      const firstSlot = slotMapping[t]!;
      if (firstSlot === PAD_SLOT_ID) {
        t++;
        continue;
      }
      let runEnd = t + 1;
      while (runEnd < numTokens && slotMapping[runEnd] === firstSlot + (runEnd - t)) runEnd++;
      const source = t * this.tokenStride;
      const sourceEnd = runEnd * this.tokenStride;
      const target = firstSlot * this.tokenStride;
      keyPool.set(keys.subarray(source, sourceEnd), target);
      valuePool.set(values.subarray(source, sourceEnd), target);
      t = runEnd;
    }
  }

  /** Performs copy-on-write copies (from `KVCacheManager.appendSlots`): whole blocks, every layer. */
  copyBlocks(copies: readonly BlockCopy[]): void {
    for (const { src, dst } of copies) {
      this.checkBlockId(src, 'copyBlocks src');
      this.checkBlockId(dst, 'copyBlocks dst');
    }
    for (let layer = 0; layer < this.numLayers; layer++) {
      const keyPool = this.keyPools[layer]!;
      const valuePool = this.valuePools[layer]!;
      for (const { src, dst } of copies) {
        keyPool.copyWithin(dst * this.blockStride, src * this.blockStride, (src + 1) * this.blockStride);
        valuePool.copyWithin(dst * this.blockStride, src * this.blockStride, (src + 1) * this.blockStride);
      }
    }
  }

  private checkLayer(layer: number, where: string): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.numLayers) {
      throw new Error(`samplers/kv/kv-storage: ${where}: layer ${layer} is outside [0, ${this.numLayers})`);
    }
  }

  private checkBlockId(blockId: number, where: string): void {
    if (!Number.isInteger(blockId) || blockId < 0 || blockId >= this.numBlocks) {
      throw new Error(`samplers/kv/kv-storage: ${where}: block id ${blockId} is outside [0, ${this.numBlocks})`);
    }
  }
}
