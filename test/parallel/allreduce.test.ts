/**
 * The all-reduce pieces and the sharding rule, on hand-worked numbers.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend.js';
import {
  createSlotBuffer, gradientLayout, partitionRange, readReduced, reduceSlotRange, slotViews, writeSlot,
} from '../../src/parallel/allreduce.js';
import { shardMicroBatches } from '../../src/parallel/shard.js';

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
});

describe('slots and reduction', () => {
  // layout: 'a' [2] at 0, 'b' [2, 2] at 2 → 6 elements
  const layout = gradientLayout(['a', 'b'], [[2], [2, 2]]);

  it('lays parameters out end to end in the given order', () => {
    expect(layout.offsets).toEqual([0, 2]);
    expect(layout.sizes).toEqual([2, 4]);
    expect(layout.numElements).toBe(6);
  });

  it('writeSlot writes present gradients and zeros the missing ones; an unknown name is refused', () => {
    const slots = slotViews(createSlotBuffer(2, 6), 2, 6);
    slots[0].fill(9);
    const grads = new Map<string, tf.Tensor>([['b', tf.tensor2d([[1, 2], [3, 4]])]]);
    expect(writeSlot(layout, grads, slots[0])).toEqual([1]);
    expect(Array.from(slots[0])).toEqual([0, 0, 1, 2, 3, 4]);
    // slots are disjoint views of one shared buffer
    expect(Array.from(slots[1])).toEqual([0, 0, 0, 0, 0, 0]);
    expect(slots[0].buffer).toBeInstanceOf(SharedArrayBuffer);
    grads.set('c', tf.tensor1d([1]));
    expect(() => writeSlot(layout, grads, slots[1])).toThrow("allreduce: gradient 'c' is not in the layout (not a trainable parameter)");
    for (const g of grads.values()) g.dispose();
  });

  it('reduceSlotRange sums the slots in order as float64, range by range, into slot 0, rounding once', () => {
    const slots = slotViews(createSlotBuffer(3, 4), 3, 4);
    slots[0].set([1, 2, 3, 1]);
    slots[1].set([10, 20, 30, 2 ** -24]);
    slots[2].set([100, 200, 300, 2 ** -24]);
    reduceSlotRange(slots, 0, 2);
    reduceSlotRange(slots, 2, 4);
    // 1 + 2⁻²⁴ + 2⁻²⁴ = 1 + 2⁻²³ in float64, which float32 holds; summing in float32 step by step
    // would round 1 + 2⁻²⁴ back to 1 twice
    expect(Array.from(slots[0])).toEqual([111, 222, 333, 1 + 2 ** -23]);
    expect(Math.fround(Math.fround(1 + 2 ** -24) + 2 ** -24)).toBe(1);
    expect(Array.from(slots[1])).toEqual([10, 20, 30, 2 ** -24]);
    // two slots take the unrolled path: 1 + 3 = 4, 2 + 4.5 = 6.5
    const pair = slotViews(createSlotBuffer(2, 2), 2, 2);
    pair[0].set([1, 2]);
    pair[1].set([3, 4.5]);
    reduceSlotRange(pair, 0, 2);
    expect(Array.from(pair[0])).toEqual([4, 6.5]);
    expect(() => reduceSlotRange(pair, 0, 3)).toThrow('allreduce: range [0, 3) is outside a slot of 2');
  });

  it('partitionRange covers [0, n) with contiguous ranges cut at multiples of 16', () => {
    // 1000 / 3 = 333.3 → 336 (21·16); 2000 / 3 = 666.7 → 672 (42·16)
    expect([0, 1, 2].map((p) => partitionRange(1000, 3, p))).toEqual([[0, 336], [336, 672], [672, 1000]]);
    expect([0, 1].map((p) => partitionRange(10, 2, p))).toEqual([[0, 10], [10, 10]]);
    expect(partitionRange(7, 1, 0)).toEqual([0, 7]);
    expect(() => partitionRange(7, 2, 2)).toThrow('allreduce: part 2 of 2 is not a valid partition index');
  });

  it('readReduced copies the present gradients out of the shared slot', () => {
    const slots = slotViews(createSlotBuffer(1, 6), 1, 6);
    slots[0].set([1, 2, 3, 4, 5, 6]);
    const grads = readReduced(layout, slots[0], [0, 1]);
    slots[0].fill(0); // a later step overwrites the slot: the tensors must not change
    expect(Array.from(grads.get('a')!.dataSync())).toEqual([1, 2]);
    expect(grads.get('b')!.shape).toEqual([2, 2]);
    expect(Array.from(grads.get('b')!.dataSync())).toEqual([3, 4, 5, 6]);
    expect(readReduced(layout, slots[0], [1]).has('a')).toBe(false);
    for (const g of grads.values()) g.dispose();
  });
});

describe('shardMicroBatches', () => {
  const halves = (batch: string, numParts: number) => Array.from({ length: numParts }, (_, i) => `${batch}/${i}`);

  it('gives whole micro-batches in contiguous blocks when their number is a multiple of the replicas', () => {
    expect(shardMicroBatches(['m0', 'm1', 'm2', 'm3'], 2, halves)).toEqual([['m0', 'm1'], ['m2', 'm3']]);
    expect(shardMicroBatches(['m0', 'm1'], 1)).toEqual([['m0', 'm1']]);
  });

  it('otherwise cuts every micro-batch into one part per replica when the task can split', () => {
    expect(shardMicroBatches(['m0'], 2, halves)).toEqual([['m0/0'], ['m0/1']]);
    expect(shardMicroBatches(['m0', 'm1', 'm2'], 2, halves)).toEqual([['m0/0', 'm1/0', 'm2/0'], ['m0/1', 'm1/1', 'm2/1']]);
    // a batch with fewer rows than replicas leaves the last replicas without work
    expect(shardMicroBatches(['m0'], 3, () => ['r0', 'r1'])).toEqual([['r0'], ['r1'], []]);
  });

  it('and without a split, deals uneven blocks of whole micro-batches', () => {
    expect(shardMicroBatches(['m0', 'm1', 'm2'], 2)).toEqual([['m0', 'm1'], ['m2']]);
    expect(shardMicroBatches(['m0'], 3)).toEqual([['m0'], [], []]);
  });
});
