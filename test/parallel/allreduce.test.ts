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

  it('reduceSlotRange sums the slots in order and divides by the global weight, range by range, into slot 0', () => {
    const slots = slotViews(createSlotBuffer(3, 4), 3, 4);
    slots[0].set([1, 2, 3, 4]);
    slots[1].set([10, 20, 30, 40]);
    slots[2].set([100, 200, 300, 400]);
    reduceSlotRange(slots, 0, 2, 10);
    reduceSlotRange(slots, 2, 4, 10);
    // (1 + 10 + 100) / 10 = 11.1, … rounded once to float32
    expect(Array.from(slots[0])).toEqual([11.1, 22.2, 33.3, 44.4].map(Math.fround));
    expect(Array.from(slots[1])).toEqual([10, 20, 30, 40]);
    // two slots take the unrolled path: (1 + 3) / 4 = 1, (2 + 4) / 4 = 1.5
    const pair = slotViews(createSlotBuffer(2, 2), 2, 2);
    pair[0].set([1, 2]);
    pair[1].set([3, 4]);
    reduceSlotRange(pair, 0, 2, 4);
    expect(Array.from(pair[0])).toEqual([1, 1.5]);
    expect(() => reduceSlotRange(pair, 0, 2, 0)).toThrow('allreduce: divisor must be a finite number > 0, got 0');
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
