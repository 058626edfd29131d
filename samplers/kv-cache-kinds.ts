/**
 * The KV-cache strategies of the sampling engine, by name (plain data, no tfjs, so the command
 * line can offer them without loading tensors): `paged` (shared-prefix paged blocks), `dense`
 * (a contiguous cache per sample) and `none` (recompute every step, the test oracle).
 */
export const KV_CACHE_KINDS = ['paged', 'dense', 'none'] as const;
export type KVCacheKind = (typeof KV_CACHE_KINDS)[number];
