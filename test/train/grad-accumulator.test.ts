import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import {
  computeGradients,
  disposeGrads,
  flattenGrads,
  GradientAccumulator,
  sortedNames,
  unflattenGrads,
} from '../../src/train/grad-accumulator.js';

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
});

function values(t: tf.Tensor): number[] {
  return Array.from(t.dataSync());
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) expect(Math.abs(actual[i]! - expected[i]!)).toBeLessThan(tol);
}

describe('computeGradients', () => {
  it('returns the loss and gradients keyed by parameter name, skipping frozen and unused parameters', () => {
    // loss = Σ w² · b · c with w = [1, 2], b = 3, c = 2 (frozen): loss = 5·3·2 = 30,
    // ∂loss/∂w = 2w·b·c = [12, 24], ∂loss/∂b = Σ w² · c = 10.
    const params = new Map<string, tf.Variable>([
      ['model.layers.0.mlp.up_proj.weight', tf.variable(tf.tensor1d([1, 2]))],
      ['score.bias', tf.variable(tf.scalar(3))],
      ['frozen.weight', tf.variable(tf.scalar(2), false)],
      ['unused.weight', tf.variable(tf.tensor1d([7]))],
    ]);
    const w = params.get('model.layers.0.mlp.up_proj.weight')!;
    const b = params.get('score.bias')!;
    const c = params.get('frozen.weight')!;
    const before = tf.memory().numTensors;
    const { loss, grads } = computeGradients(params, () => tf.mul(tf.mul(tf.sum(tf.square(w)), b), c) as tf.Scalar);
    expect(loss).toBeCloseTo(30, 5);
    expect([...grads.keys()]).toEqual(['model.layers.0.mlp.up_proj.weight', 'score.bias']);
    expect(values(grads.get('model.layers.0.mlp.up_proj.weight')!)).toEqual([12, 24]);
    expect(values(grads.get('score.bias')!)).toEqual([10]);
    disposeGrads(grads);
    expect(tf.memory().numTensors).toBe(before); // nothing left behind but what was returned
    tf.dispose([...params.values()]);
  });

  it('rejects a tf.Variable listed under two names', () => {
    const v = tf.variable(tf.tensor1d([1]));
    const params = new Map<string, tf.Variable>([
      ['model.embed_tokens.weight', v],
      ['lm_head.weight', v],
    ]);
    expect(() => computeGradients(params, () => tf.sum(v))).toThrow(/parameters 'lm_head.weight' and 'model.embed_tokens.weight' are the same tf.Variable/);
    v.dispose();
  });
});

describe('GradientAccumulator', () => {
  it('sums micro-batch gradients, a missing gradient counting as zero', () => {
    // w: [1, 2] + [4, −1] = [5, 1];  b: 0 + 2 = 2
    const before = tf.memory().numTensors;
    const acc = new GradientAccumulator();
    const g1 = new Map<string, tf.Tensor>([['w', tf.tensor1d([1, 2])]]);
    const g2 = new Map<string, tf.Tensor>([['w', tf.tensor1d([4, -1])], ['b', tf.tensor1d([2])]]);
    acc.add(g1);
    disposeGrads(g1); // the accumulator keeps no reference to what it was given
    acc.add(g2);
    disposeGrads(g2);
    expect(acc.numMicroBatches).toBe(2);
    const sum = acc.sum();
    expect([...sum.keys()]).toEqual(['b', 'w']);
    expect(values(sum.get('w')!)).toEqual([5, 1]);
    expect(values(sum.get('b')!)).toEqual([2]);
    disposeGrads(sum);
    acc.reset();
    expect(acc.numMicroBatches).toBe(0);
    expect(tf.memory().numTensors).toBe(before);
    expect(() => acc.sum()).toThrow(/before any add/);
  });

  it('summing the gradients of token sums each divided by the GLOBAL token count equals the gradient of the whole batch\'s token mean', () => {
    // loss(tokens) = mean over tokens of (w·x − y)²; micro-batches of 3 and 1 tokens, each Σ / 4.
    const w = tf.variable(tf.tensor1d([0.5, -1]));
    const params = new Map<string, tf.Variable>([['w', w]]);
    const xs = [[1, 2], [0, 1], [3, -1], [2, 2]];
    const ys = [1, 0, 2, -1];
    const lossOver = (rows: number[], reduce: (t: tf.Tensor) => tf.Tensor) => () =>
      tf.tidy(() => {
        const x = tf.tensor2d(rows.map((r) => xs[r]!)); // [N, 2]
        const y = tf.tensor1d(rows.map((r) => ys[r]!)); // [N]
        const pred = tf.squeeze(tf.matMul(x, tf.reshape(w, [2, 1])), [1]); // [N]
        return reduce(tf.square(tf.sub(pred, y))) as tf.Scalar;
      });
    const full = computeGradients(params, lossOver([0, 1, 2, 3], (t) => tf.mean(t)));
    const acc = new GradientAccumulator();
    for (const rows of [[0, 1, 2], [3]]) {
      const micro = computeGradients(params, lossOver(rows, (t) => tf.div(tf.sum(t), 4)));
      acc.add(micro.grads);
      disposeGrads(micro.grads);
    }
    const sum = acc.sum();
    expectClose(values(sum.get('w')!), values(full.grads.get('w')!), 1e-6);
    // the mean of the micro-batches' own means differs, so normalising by the global count matters
    const meanOfMeans = new GradientAccumulator();
    for (const rows of [[0, 1, 2], [3]]) {
      const micro = computeGradients(params, lossOver(rows, (t) => tf.div(tf.mean(t), 2)));
      meanOfMeans.add(micro.grads);
      disposeGrads(micro.grads);
    }
    const plain = meanOfMeans.sum();
    expect(Math.abs(values(plain.get('w')!)[0]! - values(full.grads.get('w')!)[0]!)).toBeGreaterThan(0.1);
    [sum, plain, full.grads].forEach(disposeGrads);
    acc.reset();
    meanOfMeans.reset();
    w.dispose();
  });

  it('rejects a shape change between micro-batches without changing the sums', () => {
    const acc = new GradientAccumulator();
    const a = new Map<string, tf.Tensor>([['w', tf.tensor1d([1, 2])]]);
    const b = new Map<string, tf.Tensor>([['v', tf.tensor1d([5])], ['w', tf.tensor1d([1, 2, 3])]]);
    acc.add(a);
    expect(() => acc.add(b)).toThrow(/gradient 'w' has shape \[3\] but earlier micro-batches gave \[2\]/);
    const sum = acc.sum();
    expect([...sum.keys()]).toEqual(['w']);
    expect(values(sum.get('w')!)).toEqual([1, 2]);
    expect(acc.numMicroBatches).toBe(1);
    [a, b, sum].forEach(disposeGrads);
    acc.reset();
  });
});

describe('flattenGrads / unflattenGrads', () => {
  it('round-trips through a SharedArrayBuffer view in the given name order', () => {
    const grads = new Map<string, tf.Tensor>([
      ['b', tf.tensor2d([[1, 2, 3], [4, 5, 6]])],
      ['a', tf.tensor1d([7, 8, 9, 10])],
      ['c', tf.scalar(11)],
    ]);
    const names = sortedNames(grads); // ['a', 'b', 'c']
    const shared = new Float32Array(new SharedArrayBuffer(11 * 4));
    const flat = flattenGrads(grads, names, shared);
    expect(flat).toBe(shared);
    expect(Array.from(flat)).toEqual([7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 11]);
    const shapes = names.map((n) => grads.get(n)!.shape);
    const back = unflattenGrads(flat, names, shapes);
    shared.fill(0); // the tensors hold copies, not views of the shared buffer
    for (const name of names) {
      expect(back.get(name)!.shape).toEqual(grads.get(name)!.shape);
      expect(values(back.get(name)!)).toEqual(values(grads.get(name)!));
    }
    expect(Array.from(flattenGrads(grads, ['c', 'a']))).toEqual([11, 7, 8, 9, 10]);
    expect(() => flattenGrads(grads, ['a', 'zz'])).toThrow(/gradient 'zz' is missing/);
    expect(() => flattenGrads(grads, names, new Float32Array(3))).toThrow(/output has 3 elements but the gradients hold 11/);
    expect(() => unflattenGrads(new Float32Array(10), names, shapes)).toThrow(/shapes hold 11 elements but the flat buffer has 10/);
    disposeGrads(grads);
    disposeGrads(back);
  });
});
