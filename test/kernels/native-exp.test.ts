/**
 * The native Exp kernel (native/elementwise.cc via src/kernels/native-exp.ts) against Math.exp
 * rounded to float32, and against wasm's own Exp: accuracy in ulps, special values, lengths that
 * are not a multiple of the 8-lane vector, and a length split across threads.
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

function expOn(path: 'native' | 'xnnpack', values: Float32Array): Float32Array {
  setMatMulPath(path);
  return readOnce(() => tf.exp(tf.tensor1d(values)));
}

/** Distance in units in the last place between two finite float32 values of the same sign. */
function ulps(a: number, b: number): number {
  const ints = new Int32Array(new Float32Array([a, b]).buffer);
  return Math.abs(ints[0] - ints[1]);
}

describe.skipIf(!native.addon)('native exp', () => {
  it('is within 2 ulp of exp over [−104, 88.7], subnormal results included', () => {
    const n = 200_001;
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = -104 + (192.7 * i) / (n - 1);
    const got = expOn('native', x);
    let worst = 0;
    for (let i = 0; i < n; i++) {
      const want = Math.fround(Math.exp(x[i]));
      if (want === 0) expect(got[i]).toBeLessThan(2e-45);
      else worst = Math.max(worst, ulps(got[i], want));
    }
    expect(worst).toBeLessThanOrEqual(2);
    // exp(−100) = 3.72e−44 is subnormal in float32 (smallest normal 1.18e−38): kept, not flushed.
    expect(expOn('native', new Float32Array([-100]))[0]).toBe(Math.fround(Math.exp(-100)));
  });

  it('gives the exact special values: exp(0) = 1, exp(1) = e, overflow to ∞, −∞ to 0, NaN stays NaN', () => {
    const got = expOn('native', new Float32Array([0, 1, -1, 89, 1000, -Infinity, Infinity, NaN, -1000]));
    expect(got[0]).toBe(1);
    expect(got[1]).toBe(Math.fround(Math.E));
    expect(got[2]).toBe(Math.fround(Math.exp(-1)));
    expect(got[3]).toBe(Infinity);
    expect(got[4]).toBe(Infinity);
    expect(got[5]).toBe(0);
    expect(got[6]).toBe(Infinity);
    expect(got[7]).toBeNaN();
    expect(got[8]).toBe(0);
  });

  it('handles lengths that are not a multiple of 8 and lengths split across threads, agreeing with wasm’s Exp', () => {
    for (const n of [1, 7, 9, 17, 1_000_003]) {
      const x = new Float32Array(n);
      for (let i = 0; i < n; i++) x[i] = Math.sin(i) * 20 - 5; // logits-like values in [−25, 15]
      process.env.TFALIGN_NATIVE_THREADS = '2';
      const threaded = expOn('native', x);
      process.env.TFALIGN_NATIVE_THREADS = '1';
      const single = expOn('native', x);
      const reference = expOn('xnnpack', x);
      let worst = 0;
      let numThreadDiffs = 0;
      for (let i = 0; i < n; i++) {
        if (threaded[i] !== single[i]) numThreadDiffs++;
        worst = Math.max(worst, ulps(single[i], reference[i]));
      }
      expect(numThreadDiffs, `n=${n}`).toBe(0);
      expect(worst, `n=${n}`).toBeLessThanOrEqual(2);
    }
  });

  it('leaves int32 inputs to wasm’s kernel (exp of [0, 1, 2] as float32)', () => {
    const got = readOnce(() => tf.exp(tf.tensor1d([0, 1, 2], 'int32')));
    expect(Array.from(got).map((v) => Number(v.toFixed(5)))).toEqual([1, 2.71828, 7.38906]);
  });
});
