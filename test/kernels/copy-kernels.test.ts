/**
 * GatherV2 as row copies (src/kernels/row-gather.ts) and Concat, Slice, SplitV as native block
 * copies (src/kernels/native-copy.ts), with PadV2 (wasm's) in the gradients, against a JS recompute
 * and against wasm's own kernels:
 * any axis, repeated ids, multi-dimensional ids, three inputs, blocks cut on several axes, runs too
 * short for the copy path, the out-of-range id error, the gradient of an embedding lookup and of
 * RoPE's rotate-half (slice → pad, concat → split).
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { loadNativeAddon } from '../../src/kernels/native-addon.js';
import { setMatMulPath } from '../../src/kernels/wasm-kernels.js';

const native = loadNativeAddon();

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
});

/** x of `shape` with x[flat] = flat. */
const iota = (shape: number[]) => tf.tidy(() => tf.reshape(tf.range(0, shape.reduce((a, b) => a * b, 1), 1, 'float32'), shape));

describe('copy kernels on wasm', () => {
  it('gathers rows of an embedding table, repeated ids included, with ids of any shape', () => {
    const table = iota([5, 8]); // row r holds 8r … 8r+7
    const ids = tf.tensor2d([[4, 0], [4, 2]], undefined, 'int32');
    const out = tf.gather(table, ids);
    expect(out.shape).toEqual([2, 2, 8]);
    const rows = [4, 0, 4, 2];
    expect(Array.from(out.dataSync())).toEqual(rows.flatMap((r) => Array.from({ length: 8 }, (_, j) => 8 * r + j)));
    tf.dispose([table, ids, out]);
  });

  it('gathers along a middle axis: out[a, i, c] = x[a, ids[i], c]', () => {
    const x = iota([2, 3, 10]);
    const ids = tf.tensor1d([2, 2, 0], 'int32');
    const out = tf.gather(x, ids, 1);
    expect(out.shape).toEqual([2, 3, 10]);
    const got = out.dataSync();
    const want: number[] = [];
    for (let a = 0; a < 2; a++) for (const i of [2, 2, 0]) for (let c = 0; c < 10; c++) want.push(a * 30 + i * 10 + c);
    expect(Array.from(got)).toEqual(want);
    tf.dispose([x, ids, out]);
  });

  it('leaves short runs to wasm (same answer) and names an out-of-range id', () => {
    const x = tf.tensor1d([10, 11, 12]);
    expect(Array.from(tf.gather(x, tf.tensor1d([2, 0], 'int32')).dataSync())).toEqual([12, 10]);
    const table = iota([4, 8]);
    expect(() => tf.gather(table, tf.tensor1d([1, 4], 'int32'))).toThrow('GatherV2: the index value 4 is not in [0, 3]');
    expect(() => tf.gather(table, tf.tensor1d([-1], 'int32'))).toThrow('GatherV2: the index value -1 is not in [0, 3]');
  });

  it('gives an embedding lookup the gradient Σ of upstream rows per id (id 1 used twice)', () => {
    const table = tf.variable(tf.zeros([3, 8]));
    const ids = tf.tensor1d([1, 2, 1], 'int32');
    const upstream = tf.tensor2d(Array.from({ length: 24 }, (_, i) => i), [3, 8]);
    const { grads } = tf.variableGrads(() => tf.sum(tf.mul(tf.gather(table, ids), upstream)), [table]);
    const g = grads[table.name].arraySync() as number[][];
    expect(g[0]).toEqual(new Array(8).fill(0));
    expect(g[1]).toEqual(Array.from({ length: 8 }, (_, j) => j + (16 + j))); // rows 0 and 2 of upstream
    expect(g[2]).toEqual(Array.from({ length: 8 }, (_, j) => 8 + j));
    tf.dispose([table, ids, upstream, ...Object.values(grads)]);
  });

  it('concatenates three inputs along the last and a middle axis, and RoPE-style halves', () => {
    const a = iota([2, 8]);
    const b = tf.add(iota([2, 16]), 100);
    const c = tf.add(iota([2, 8]), 1000);
    const last = tf.concat([a, b, c], 1);
    expect(last.shape).toEqual([2, 32]);
    const av = a.dataSync(), bv = b.dataSync(), cv = c.dataSync();
    const want: number[] = [];
    for (let r = 0; r < 2; r++) want.push(...av.slice(r * 8, r * 8 + 8), ...bv.slice(r * 16, r * 16 + 16), ...cv.slice(r * 8, r * 8 + 8));
    expect(Array.from(last.dataSync())).toEqual(want);

    const x = iota([2, 2, 3, 8]);
    const y = tf.add(iota([2, 1, 3, 8]), 500);
    const middle = tf.concat([x, y], 1);
    expect(middle.shape).toEqual([2, 3, 3, 8]);
    const mv = middle.dataSync();
    expect(Array.from(mv.slice(0, 48))).toEqual(Array.from(x.dataSync().slice(0, 48)));
    expect(Array.from(mv.slice(48, 72))).toEqual(Array.from(y.dataSync().slice(0, 24)));

    const q = tf.randomNormal([2, 3, 5, 16], 0, 1, 'float32', 3);
    const rotated = tf.concat([tf.neg(tf.slice(q, [0, 0, 0, 8], [2, 3, 5, 8])), tf.slice(q, [0, 0, 0, 0], [2, 3, 5, 8])], 3); // rotate_half
    const qv = q.dataSync();
    const rv = rotated.dataSync();
    for (let row = 0; row < 30; row++) {
      for (let j = 0; j < 8; j++) {
        expect(rv[row * 16 + j]).toBe(-qv[row * 16 + 8 + j]);
        expect(rv[row * 16 + 8 + j]).toBe(qv[row * 16 + j]);
      }
    }
    tf.dispose([a, b, c, last, x, y, middle, q, rotated]);
  });

  it('leaves short runs and mixed empties to wasm', () => {
    const out = tf.concat([tf.tensor2d([[1], [2]]), tf.tensor2d([[3], [4]]), tf.zeros([2, 0])], 1);
    expect(out.arraySync()).toEqual([[1, 3], [2, 4]]);
  });

  it('slices blocks cut on one or several axes, by hand-computable iota values', () => {
    const x = iota([3, 4, 5, 16]); // x[a, b, c, d] = ((a·4 + b)·5 + c)·16 + d
    const at = (a: number, b: number, c: number, d: number) => ((a * 4 + b) * 5 + c) * 16 + d;
    const cases: [number[], number[]][] = [
      [[0, 0, 0, 8], [3, 4, 5, 8]], // RoPE's second half
      [[1, 1, 2, 0], [2, 2, 3, 16]], // cut on three axes, last whole
      [[2, 0, 0, 0], [1, 4, 5, 16]], // contiguous
      [[0, 3, 1, 4], [3, 1, 4, 9]],
    ];
    for (const [begin, size] of cases) {
      const got = tf.slice(x, begin, size).dataSync();
      const want: number[] = [];
      for (let a = 0; a < size[0]; a++) for (let b = 0; b < size[1]; b++) for (let c = 0; c < size[2]; c++) for (let d = 0; d < size[3]; d++) want.push(at(begin[0] + a, begin[1] + b, begin[2] + c, begin[3] + d));
      expect(Array.from(got), `${begin} ${size}`).toEqual(want);
    }
    // size −1 means "to the end"
    expect(tf.slice(x, [0, 0, 0, 8], [-1, -1, -1, -1]).shape).toEqual([3, 4, 5, 8]);
    x.dispose();
  });

  it('splits along the last and a middle axis into pieces that concatenate back to the input', () => {
    const x = tf.randomNormal([2, 6, 3, 24], 0, 1, 'float32', 4);
    for (const [sizes, axis] of [[[8, 16], 3], [[1, 3, 2], 1]] as [number[], number][]) {
      const pieces = tf.split(x, sizes, axis);
      expect(pieces.map((p) => p.shape[axis])).toEqual(sizes);
      expect(Array.from(tf.concat(pieces, axis).dataSync())).toEqual(Array.from(x.dataSync()));
    }
  });

  it('pads with a constant on several axes: the input block lands at the "before" corner', () => {
    const x = iota([2, 3, 8]);
    const out = tf.pad(x, [[1, 0], [0, 2], [4, 4]], 7);
    expect(out.shape).toEqual([3, 5, 16]);
    const v = out.dataSync();
    for (let a = 0; a < 3; a++) for (let b = 0; b < 5; b++) for (let c = 0; c < 16; c++) {
      const inside = a >= 1 && b < 3 && c >= 4 && c < 12;
      expect(v[(a * 5 + b) * 16 + c]).toBe(inside ? ((a - 1) * 3 + b) * 8 + (c - 4) : 7);
    }
  });

  it('differentiates rotate-half: d/dq Σ w ⊙ rotate_half(q) = rotate_half⁻¹(w) = [w₂, −w₁]', () => {
    const q = tf.randomNormal([2, 3, 5, 16], 0, 1, 'float32', 5);
    const w = tf.randomNormal([2, 3, 5, 16], 0, 1, 'float32', 6);
    const rotateHalf = (t: tf.Tensor) => tf.concat([tf.neg(tf.slice(t, [0, 0, 0, 8], [2, 3, 5, 8])), tf.slice(t, [0, 0, 0, 0], [2, 3, 5, 8])], 3);
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(w, rotateHalf(t))))(q).dataSync();
    const wv = w.dataSync();
    for (let row = 0; row < 30; row++) {
      for (let j = 0; j < 8; j++) {
        expect(g[row * 16 + j]).toBe(wv[row * 16 + 8 + j]); // q₁ appears in the second half with +
        expect(g[row * 16 + 8 + j]).toBe(-wv[row * 16 + j]); // q₂ appears in the first half with −
      }
    }
  });

  it.skipIf(!native.addon)('gives bit-identical results on the native and the wasm kernels', () => {
    const x = tf.randomNormal([3, 4, 5, 16], 0, 1, 'float32', 11);
    const y = tf.randomNormal([3, 2, 5, 16], 0, 1, 'float32', 12);
    const run = (path: 'native' | 'xnnpack') => {
      setMatMulPath(path);
      return tf.tidy(() => [
        tf.slice(x, [1, 1, 0, 3], [2, 3, 5, 7]),
        tf.concat([x, y], 1),
        tf.concat([x, x, x], 3),
        ...tf.split(x, [1, 4, 11], 3),
        tf.pad(x, [[0, 1], [2, 0], [1, 1], [0, 3]], -2),
      ].map((t) => ({ shape: t.shape, values: Array.from(t.dataSync()) })));
    };
    const viaNative = run('native');
    const viaWasm = run('xnnpack');
    setMatMulPath('native');
    expect(viaNative).toEqual(viaWasm);
    tf.dispose([x, y]);
  });
});
