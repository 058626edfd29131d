/**
 * The native Sum kernel (native/elementwise.cc via src/kernels/native-sum.ts) against a float64
 * recompute and against wasm's own Sum: every contiguous block of axes of a rank-4 tensor, keepDims,
 * negative axes, rows long enough to use every vector lane plus a tail, threads, and the cases left
 * to wasm (non-contiguous axes, int32).
 */
import * as tf from '@tensorflow/tfjs';
import { afterEach, describe, expect, it } from 'vitest';
import { native, readOnce, useWasmBackend } from './native-helpers.js';
import { setMatMulPath } from '../../src/kernels/wasm-kernels.js';

useWasmBackend();

afterEach(() => {
  delete process.env.TFALIGN_NATIVE_THREADS;
  if (native.addon) setMatMulPath('native');
});

function sumOn(path: 'native' | 'xnnpack', x: tf.Tensor, axis: number | number[], keepDims = false): { shape: number[]; values: Float32Array } {
  setMatMulPath(path);
  const s = tf.sum(x, axis, keepDims);
  const out = { shape: s.shape, values: s.dataSync() as Float32Array };
  s.dispose();
  return out;
}

/** Σ over `axes` of a row-major array of `shape`, in float64. */
function referenceSum(values: Float32Array, shape: number[], axes: number[]): Float64Array {
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const kept = shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const outStrides = kept.map((_, j) => kept.slice(j + 1).reduce((a, i) => a * shape[i], 1));
  const out = new Float64Array(kept.reduce((a, i) => a * shape[i], 1));
  for (let flat = 0; flat < values.length; flat++) {
    let o = 0;
    kept.forEach((i, j) => (o += Math.floor(flat / strides[i]) % shape[i] * outStrides[j]));
    out[o] += values[flat];
  }
  return out;
}

describe.skipIf(!native.addon)('native sum', () => {
  it('sums [[1, 2, 3], [4, 5, 6]] by hand: rows → [6, 15], columns → [5, 7, 9], all → 21', () => {
    const x = tf.tensor2d([[1, 2, 3], [4, 5, 6]]);
    expect(Array.from(sumOn('native', x, 1).values)).toEqual([6, 15]);
    expect(Array.from(sumOn('native', x, 0).values)).toEqual([5, 7, 9]);
    expect(Array.from(sumOn('native', x, [0, 1]).values)).toEqual([21]);
    expect(sumOn('native', x, 0, true).shape).toEqual([1, 3]);
    x.dispose();
  });

  it('matches a float64 recompute and wasm’s Sum for every contiguous block of axes, with 1 and 2 threads', () => {
    const shape = [3, 37, 5, 41];
    const x = tf.randomNormal(shape, 0, 1, 'float32', 7);
    const values = x.dataSync() as Float32Array;
    const blocks: number[][] = [];
    for (let i = 0; i < 4; i++) for (let j = i; j < 4; j++) blocks.push(Array.from({ length: j - i + 1 }, (_, k) => i + k));
    for (const axes of blocks) {
      const want = referenceSum(values, shape, axes);
      const viaWasm = sumOn('xnnpack', x, axes, true);
      for (const threads of ['1', '2']) {
        process.env.TFALIGN_NATIVE_THREADS = threads;
        const got = sumOn('native', x, axes, true);
        expect(got.shape, `${axes}`).toEqual(viaWasm.shape);
        const numReduced = axes.reduce((a, i) => a * shape[i], 1);
        for (let i = 0; i < want.length; i++) expect(Math.abs(got.values[i] - want[i]), `axes ${axes} [${i}]`).toBeLessThan(1e-6 * numReduced);
      }
    }
    expect(blocks).toHaveLength(10);
    // Negative axes name the same block.
    expect(Array.from(sumOn('native', x, -1).values)).toEqual(Array.from(sumOn('native', x, 3).values));
    x.dispose();
  });

  it('splits large sums across threads without changing a bit (rows of 8,192 and columns of 384)', () => {
    const logits = tf.randomNormal([64, 8192], 0, 3, 'float32', 8); // rows: Σ over the vocabulary
    const grads = tf.randomNormal([2048, 384], 0, 1, 'float32', 9); // columns: a bias-style gradient
    for (const [x, axis] of [[logits, 1], [grads, 0]] as [tf.Tensor, number][]) {
      process.env.TFALIGN_NATIVE_THREADS = '1';
      const one = sumOn('native', x, axis).values;
      process.env.TFALIGN_NATIVE_THREADS = '2';
      const two = sumOn('native', x, axis).values;
      expect(Array.from(two)).toEqual(Array.from(one));
      const want = referenceSum(x.dataSync() as Float32Array, x.shape, [axis]);
      for (let i = 0; i < want.length; i++) expect(Math.abs(one[i] - want[i])).toBeLessThan(1e-3);
    }
    tf.dispose([logits, grads]);
  });

  it('leaves non-contiguous axes and int32 to wasm, with the same results', () => {
    const x = tf.tensor3d([[[1, 2], [3, 4]], [[5, 6], [7, 8]]]);
    expect(Array.from(sumOn('native', x, [0, 2]).values)).toEqual([14, 22]);
    const ints = tf.tensor2d([[1, 2], [3, 4]], undefined, 'int32');
    const s = readOnce(() => tf.sum(ints, 0));
    expect(Array.from(s)).toEqual([4, 6]);
    tf.dispose([x, ints]);
  });
});
