/**
 * The paged KV cache: block pool (allocate, free, cache, evict), block tables per sequence
 * (the API the scheduler calls, and the cache statistics), the prefix-cache hash chain, and the typed-array storage.
 */
export { BlockPool } from './block-pool.js';
export type { BlockPoolOptions } from './block-pool.js';
export { KVCacheManager, kvCacheManagerOptionsSchema } from './cache-manager.js';
export type { BlockCopy, KVCacheManagerOptions, KVCacheStats, PromptAllocation, SlotAppend } from './cache-manager.js';
export { hashBlock } from './prefix-hash.js';
export type { ParentHash } from './prefix-hash.js';
export { PAD_SLOT_ID, PagedKVStorage } from './kv-storage.js';
export type { PagedKVStorageOptions } from './kv-storage.js';
