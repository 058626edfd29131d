import { describe, expect, it } from 'vitest';
import { PAD_SLOT_ID, PagedKVStorage } from '../../../samplers/kv/kv-storage.js';
import { gatherSequence } from '../helpers.js';

/** numBlocks 3, blockSize 2, 2 KV heads of 2 floats: 4 floats per token, 8 per block. */
function newStorage(numLayers = 2): PagedKVStorage {
  return new PagedKVStorage({ numLayers, numBlocks: 3, blockSize: 2, numKvHeads: 2, headDim: 2 });
}

describe('PagedKVStorage', () => {
  it('writes each token at slot · numKvHeads · headDim of its layer only', () => {
    const storage = newStorage();
    const keys = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]); // [2 tokens, 2 heads, 2]
    const values = Float32Array.from([-1, -2, -3, -4, -5, -6, -7, -8]);
    storage.write(1, Int32Array.from([5, 0]), keys, values);
    const keyPool = storage.keyPool(1);
    expect(Array.from(keyPool.subarray(20, 24))).toEqual([1, 2, 3, 4]); // slot 5 = block 2, offset 1
    expect(Array.from(keyPool.subarray(0, 4))).toEqual([5, 6, 7, 8]); // slot 0
    expect(Array.from(storage.valuePool(1).subarray(20, 24))).toEqual([-1, -2, -3, -4]);
    expect(keyPool.reduce((sum, x) => sum + x, 0)).toBe(36); // nothing else written
    expect(storage.keyPool(0).every((x) => x === 0)).toBe(true);
  });

  it('writes runs of consecutive slots and skips padded tokens', () => {
    const storage = newStorage(1);
    const keys = Float32Array.from({ length: 16 }, (_, i) => i + 1); // 4 tokens
    storage.write(0, Int32Array.from([2, 3, PAD_SLOT_ID, 4]), keys, keys);
    const keyPool = storage.keyPool(0);
    expect(Array.from(keyPool.subarray(8, 20))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 13, 14, 15, 16]);
    expect(keyPool.subarray(0, 8).every((x) => x === 0)).toBe(true);
  });

  it('copies whole blocks in every layer', () => {
    const storage = newStorage();
    for (let layer = 0; layer < 2; layer++) {
      const keys = Float32Array.from({ length: 8 }, (_, i) => 10 * (layer + 1) + i);
      storage.write(layer, Int32Array.from([2, 3]), keys, keys.map((x) => -x)); // block 1
    }
    storage.copyBlocks([{ src: 1, dst: 2 }]);
    for (let layer = 0; layer < 2; layer++) {
      expect(Array.from(storage.keyPool(layer).subarray(16, 24))).toEqual(Array.from({ length: 8 }, (_, i) => 10 * (layer + 1) + i));
      expect(Array.from(storage.valuePool(layer).subarray(16, 24))).toEqual(Array.from({ length: 8 }, (_, i) => -(10 * (layer + 1) + i)));
    }
  });

  it('holds a sequence where its block table points (read back through keyPool/valuePool)', () => {
    const storage = newStorage(1);
    // Sequence tokens 0..2 live in blocks [2, 0]: slots 4, 5, 0.
    const keys = Float32Array.from({ length: 12 }, (_, i) => 100 + i);
    storage.write(0, Int32Array.from([4, 5, 0]), keys, keys.map((x) => x / 2));
    const gathered = gatherSequence(storage, 0, [2, 0], 3);
    expect(Array.from(gathered.keys)).toEqual(Array.from(keys));
    expect(Array.from(gathered.values)).toEqual(Array.from(keys, (x) => x / 2));
    expect(gatherSequence(storage, 0, [2, 0], 0).keys.length).toBe(0);
  });

  it('reports its memory', () => {
    const storage = newStorage();
    expect(storage.bytesInUse(storage.numBlocks)).toBe(2 * 2 * 3 * 8 * 4); // K and V, 2 layers, 3 blocks of 8 floats
    expect(storage.bytesInUse(1)).toBe(2 * 2 * 8 * 4);
  });

  it('rejects bad shapes, slots, layers and blocks with one-line errors', () => {
    const storage = newStorage();
    const four = new Float32Array(4);
    expect(() => storage.write(0, Int32Array.from([0, 1]), four, four)).toThrow('keys has 4 floats, expected 2·2·2');
    expect(() => storage.write(0, Int32Array.from([6]), four, four)).toThrow('slotMapping[0] = 6 is outside [0, 6)');
    expect(() => storage.write(2, Int32Array.from([0]), four, four)).toThrow('layer 2 is outside [0, 2)');
    expect(() => storage.copyBlocks([{ src: 0, dst: 3 }])).toThrow('copyBlocks dst: block id 3');
    expect(() => new PagedKVStorage({ numLayers: 1, numBlocks: 1, blockSize: 1, numKvHeads: 0, headDim: 1 })).toThrow('numKvHeads = 0');
  });
});
