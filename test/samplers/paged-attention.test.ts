import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend.js';
import { scaledDotProductAttention } from '../../src/model/attention.js';
import { KVCacheManager } from '../../samplers/kv/cache-manager.js';
import { PagedKVStorage } from '../../samplers/kv/kv-storage.js';
import { type DecodeRow, PagedDecodeAttention, PagedPrefillAttention } from '../../samplers/paged-attention.js';
import { Rng } from '../../src/util/rng.js';
import { gatherSequence } from './helpers.js';

const BLOCK_SIZE = 4;
const NUM_HEADS = 4;
const NUM_KV_HEADS = 2;
const HEAD_DIM = 4;
const TOKEN_STRIDE = NUM_KV_HEADS * HEAD_DIM;

function randomValues(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal());
}

function makeCache() {
  const manager = new KVCacheManager({ numBlocks: 64, blockSize: BLOCK_SIZE });
  const storage = new PagedKVStorage({ numLayers: 1, numBlocks: 64, blockSize: BLOCK_SIZE, numKvHeads: NUM_KV_HEADS, headDim: HEAD_DIM });
  return { manager, storage };
}

/** Writes random K/V for positions [from, to) of a sequence (what a forward would store). */
function writeRandom(cache: ReturnType<typeof makeCache>, rng: Rng, seqId: number, from: number, to: number): void {
  const n = (to - from) * TOKEN_STRIDE;
  cache.storage.write(0, cache.manager.slotMapping(seqId, from, to), randomValues(rng, n), randomValues(rng, n));
}

/**
 * Reference: softmax attention of one query [H, D] over a sequence's first `numKeys` tokens,
 * gathered from the pools (the plain, non-cascade computation).
 */
function referenceAttention(cache: ReturnType<typeof makeCache>, seqId: number, numKeys: number, query: Float32Array): Float32Array {
  return tf.tidy(() => {
    const { keys, values } = gatherSequence(cache.storage, 0, cache.manager.blockTable(seqId), numKeys);
    const toHeads = (x: Float32Array) => tf.transpose(tf.tensor4d(x, [1, numKeys, NUM_KV_HEADS, HEAD_DIM]), [0, 2, 1, 3]) as tf.Tensor4D; // [1, Hkv, L, D]
    const q = tf.tensor4d(query, [1, NUM_HEADS, 1, HEAD_DIM]);
    return scaledDotProductAttention(q, toHeads(keys), toHeads(values), null).dataSync() as Float32Array; // [1, H, 1, D]
  });
}

describe('paged attention contexts', () => {
  beforeAll(async () => {
    await initBackend('wasm', { quiet: true });
  });

  it('decode with cascade equals plain attention per row: two groups, a row without a prefix, rows out of group order', () => {
    const rng = new Rng(3);
    const cache = makeCache();
    const { manager, storage } = cache;
    // Group A: a 6-token prompt (one full block + a partial one) forked 3 ways; group B: an 8-token
    // prompt (two full blocks) forked 2 ways; a lone sequence of 5 tokens attends without a prefix.
    manager.allocatePrompt(100, [1, 2, 3, 4, 5, 6]);
    writeRandom(cache, rng, 100, 0, 6);
    manager.fork(100, [1, 2, 3]);
    manager.free(100);
    manager.allocatePrompt(200, [9, 9, 9, 9, 8, 8, 8, 8]);
    writeRandom(cache, rng, 200, 0, 8);
    manager.fork(200, [4, 5]);
    manager.free(200);
    manager.allocatePrompt(6, [7, 7, 7, 7, 7]);
    writeRandom(cache, rng, 6, 0, 5);
    // Every sequence has already decoded a few tokens of its own (different counts), then gets one more slot.
    const own = new Map([[1, 3], [2, 1], [3, 6], [4, 2], [5, 5], [6, 2]]);
    for (const [seqId, numOwn] of own) {
      const append = manager.appendSlots(seqId, numOwn)!;
      storage.copyBlocks(append.copies);
      writeRandom(cache, rng, seqId, manager.numTokens(seqId) - numOwn, manager.numTokens(seqId));
      storage.copyBlocks(manager.appendSlots(seqId, 1)!.copies);
    }
    const rows: DecodeRow[] = [
      { seqId: 4, prefixKey: 1, prefixLength: 8 },
      { seqId: 1, prefixKey: 0, prefixLength: 6 },
      { seqId: 6, prefixKey: 9, prefixLength: 0 },
      { seqId: 2, prefixKey: 0, prefixLength: 6 },
      { seqId: 5, prefixKey: 1, prefixLength: 8 },
      { seqId: 3, prefixKey: 0, prefixLength: 6 },
    ];
    const n = rows.length;
    const q = randomValues(rng, n * NUM_HEADS * HEAD_DIM);
    const k = randomValues(rng, n * TOKEN_STRIDE);
    const v = randomValues(rng, n * TOKEN_STRIDE);
    const ctx = new PagedDecodeAttention(cache, rows);
    expect(Array.from(ctx.positions)).toEqual(rows.map((r) => manager.numTokens(r.seqId) - 1));
    const out = tf.tidy(() =>
      ctx
        .attend(0, tf.tensor4d(q, [n, NUM_HEADS, 1, HEAD_DIM]), tf.tensor4d(k, [n, NUM_KV_HEADS, 1, HEAD_DIM]), tf.tensor4d(v, [n, NUM_KV_HEADS, 1, HEAD_DIM]))
        .dataSync(),
    ) as Float32Array;
    rows.forEach((row, i) => {
      // The new token's K/V went to the row's last slot.
      const numKeys = manager.numTokens(row.seqId);
      const stored = gatherSequence(storage, 0, manager.blockTable(row.seqId), numKeys).keys.subarray((numKeys - 1) * TOKEN_STRIDE);
      expect(Array.from(stored)).toEqual(Array.from(k.subarray(i * TOKEN_STRIDE, (i + 1) * TOKEN_STRIDE)));
      const expected = referenceAttention(cache, row.seqId, numKeys, q.subarray(i * NUM_HEADS * HEAD_DIM, (i + 1) * NUM_HEADS * HEAD_DIM));
      const got = out.subarray(i * NUM_HEADS * HEAD_DIM, (i + 1) * NUM_HEADS * HEAD_DIM);
      for (let j = 0; j < got.length; j++) expect(Math.abs(got[j]! - expected[j]!)).toBeLessThan(1e-5);
    });
  });

  it('prefill after a prefix-cache hit attends to the cached blocks, causally, at positions after them', () => {
    const rng = new Rng(5);
    const cache = makeCache();
    const { manager, storage } = cache;
    const prompt = [4, 4, 5, 5, 6, 6, 7, 7, 8, 8];
    manager.allocatePrompt(0, prompt);
    writeRandom(cache, rng, 0, 0, prompt.length);
    manager.cacheFullBlocks(0, prompt);
    // A second prompt with the same first 8 tokens: two cached blocks, 3 new tokens.
    const second = [...prompt.slice(0, 8), 1, 2, 3];
    const allocation = manager.allocatePrompt(1, second)!;
    expect(allocation.numCachedTokens).toBe(8);
    const ctx = new PagedPrefillAttention(cache, 1, 8, 3);
    expect(Array.from(ctx.positions)).toEqual([8, 9, 10]);
    const q = randomValues(rng, NUM_HEADS * 3 * HEAD_DIM); // [1, H, 3, D]
    const k = randomValues(rng, NUM_KV_HEADS * 3 * HEAD_DIM); // [1, Hkv, 3, D]
    const v = randomValues(rng, NUM_KV_HEADS * 3 * HEAD_DIM);
    const out = tf.tidy(() =>
      ctx.attend(0, tf.tensor4d(q, [1, NUM_HEADS, 3, HEAD_DIM]), tf.tensor4d(k, [1, NUM_KV_HEADS, 3, HEAD_DIM]), tf.tensor4d(v, [1, NUM_KV_HEADS, 3, HEAD_DIM])).dataSync(),
    ) as Float32Array;
    // Token t (position 8 + t) sees keys 0 … 8 + t: compare with the plain computation per token.
    for (let t = 0; t < 3; t++) {
      const query = new Float32Array(NUM_HEADS * HEAD_DIM);
      for (let h = 0; h < NUM_HEADS; h++) query.set(q.subarray((h * 3 + t) * HEAD_DIM, (h * 3 + t + 1) * HEAD_DIM), h * HEAD_DIM);
      const expected = referenceAttention(cache, 1, 9 + t, query);
      for (let h = 0; h < NUM_HEADS; h++) {
        for (let d = 0; d < HEAD_DIM; d++) expect(Math.abs(out[(h * 3 + t) * HEAD_DIM + d]! - expected[h * HEAD_DIM + d]!)).toBeLessThan(1e-5);
      }
    }
    // The cached blocks were read, not written: sequence 0's keys are unchanged.
    expect(gatherSequence(storage, 0, manager.blockTable(0), 8).keys).toEqual(gatherSequence(storage, 0, manager.blockTable(1), 8).keys);
  });

  it('refuses a group whose rows do not share the prefix blocks', () => {
    const cache = makeCache();
    cache.manager.allocatePrompt(0, [1, 2, 3, 4, 5]);
    cache.manager.allocatePrompt(1, [1, 2, 3, 4, 5]); // same tokens, other blocks (not cached, not forked)
    cache.manager.appendSlots(0, 1);
    cache.manager.appendSlots(1, 1);
    expect(
      () =>
        new PagedDecodeAttention(cache, [
          { seqId: 0, prefixKey: 7, prefixLength: 5 },
          { seqId: 1, prefixKey: 7, prefixLength: 5 },
        ]),
    ).toThrow('samplers/paged-attention: decode row 1 (sequence 1) does not share the prefix of group 7');
    expect(() => new PagedDecodeAttention(cache, [{ seqId: 0, prefixKey: 7, prefixLength: 6 }])).toThrow(
      'samplers/paged-attention: decode row 0 (sequence 0): prefixLength 6 is not within [0, 5]',
    );
  });
});
