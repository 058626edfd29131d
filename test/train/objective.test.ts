/**
 * Normalisation done once: a task's loss returns sums per unit, and `normalizedLoss`,
 * `metricMeans`, `evaluateObjective` and the local step engine divide by the global batch's unit
 * counts — checked on a two-unit toy objective with hand-worked values.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { addUnits, evaluateObjective, metricMeans, normalizedLoss, type MetricSum, type Objective } from '../../src/train/objective.js';
import { LocalStepEngine } from '../../src/train/step-engine.js';
import { AdamW } from '../../src/train/adamw.js';

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
});

/**
 * A toy batch with two units, like DPO + NLL: per-pair values p and per-token values t. With one
 * weight w the objective is L = (1/P) Σ_p w·p + α (1/T) Σ_t w²·t, α = 0.5.
 */
interface ToyBatch {
  pairs: number[];
  tokens: number[];
}
const ALPHA = 0.5;

function toyObjective(w: tf.Variable, calls?: ToyBatch[]): Objective<ToyBatch> {
  return {
    unitsOf: (b) => ({ pairs: b.pairs.length, tokens: b.tokens.length }),
    loss: (b) => {
      calls?.push(b);
      const pairs = tf.tidy(() => tf.mul(w, b.pairs.reduce((a, x) => a + x, 0)) as tf.Scalar);
      const tokens = tf.tidy(() => tf.mul(tf.square(w), ALPHA * b.tokens.reduce((a, x) => a + x, 0)) as tf.Scalar);
      return {
        sums: { pairs, tokens },
        metrics: { pair_value: { sum: b.pairs.reduce((a, x) => a + x, 0), unit: 'pairs' }, token_value: { sum: b.tokens.reduce((a, x) => a + x, 0), unit: 'tokens' } },
      };
    },
  };
}

// Global batch: P = 4 pairs with Σp = 11, T = 8 tokens with Σt = 11. At w = 1:
//   L = 11/4 + 0.5 · 11/8 = 2.75 + 0.6875 = 3.4375,   dL/dw = 11/4 + 2 · 0.5 · 11/8 = 4.125.
const first: ToyBatch = { pairs: [1, 2, 3], tokens: [4] };
const second: ToyBatch = { pairs: [5], tokens: [1, 1, 1, 1, 1, 1, 1] };
const merged: ToyBatch = { pairs: [...first.pairs, ...second.pairs], tokens: [...first.tokens, ...second.tokens] };
const masked: ToyBatch = { pairs: [], tokens: [] };

describe('normalizedLoss and metricMeans', () => {
  it('divide each sum by its global unit count; kinds counted 0 contribute nothing', () => {
    const sums = { a: tf.scalar(6), b: tf.scalar(3) };
    expect(normalizedLoss(sums, { a: 3, b: 2, c: 0 }).dataSync()[0]).toBe(3.5); // 6/3 + 3/2
    expect(normalizedLoss(sums, { a: 3, b: 0 }).dataSync()[0]).toBe(2);
    expect(() => normalizedLoss(sums, { a: 3 })).toThrow("objective: the loss returned a sum over 'b', which the task's unitsOf does not count (it counts a)");
    const x = tf.scalar(3);
    expect(tf.grad((v: tf.Tensor) => normalizedLoss({ a: tf.mul(v, 2) as tf.Scalar }, { a: 4 }))(x).dataSync()[0]).toBe(0.5);
  });

  it('metric means: Σ sums over micro-batches / global count of the metric\'s unit', () => {
    const records: (Record<string, MetricSum> | undefined)[] = [{ acc: { sum: 2, unit: 'rows' } }, undefined, { acc: { sum: 1, unit: 'rows' }, nll: { sum: 5, unit: 'tokens' }, empty: { sum: 0, unit: 'none' } }];
    expect(metricMeans(records, { rows: 4, tokens: 10, none: 0 })).toEqual({ acc: 0.75, nll: 0.5 });
    expect(() => metricMeans([{ acc: { sum: 1, unit: 'rows' } }, { acc: { sum: 1, unit: 'pairs' } }], { rows: 1, pairs: 1 })).toThrow(
      "objective: metric 'acc' is a sum over 'pairs' here but over 'rows' in another micro-batch",
    );
    expect(() => addUnits([{ rows: 1 }, { rows: -1 }])).toThrow("objective: unit count 'rows' must be a finite number ≥ 0, got -1");
  });
});

describe('evaluateObjective', () => {
  it('two units: the batches as one global batch (hand-worked), a fully masked batch not even computed', () => {
    const w = tf.variable(tf.scalar(1));
    const calls: ToyBatch[] = [];
    const split = evaluateObjective(toyObjective(w, calls), [first, masked, second]);
    expect(calls).toEqual([first, second]);
    expect(split.units).toEqual({ pairs: 4, tokens: 8 });
    expect(split.loss).toBeCloseTo(3.4375, 6);
    expect(split.metrics).toEqual({ pair_value: 11 / 4, token_value: 11 / 8 });
    const whole = evaluateObjective(toyObjective(w), [merged]);
    expect(whole.loss).toBeCloseTo(split.loss, 6);
    // the mean of the batches' own objectives, weighted by pairs, is another number: (3·4 + 5.5) / 4
    const own = [first, second].map((b) => evaluateObjective(toyObjective(w), [b]).loss); // [6/3 + 0.5·4/1, 5/1 + 0.5·7/7]
    expect(own[0]).toBeCloseTo(4, 6);
    expect(own[1]).toBeCloseTo(5.5, 6);
    expect((3 * own[0] + 1 * own[1]) / 4).toBeCloseTo(4.375, 6);
    w.dispose();
  });
});

describe('LocalStepEngine normalises once', () => {
  it('micro-batches of unequal units give the unsplit loss, metrics and gradient (hand-worked), with no tensor left behind', async () => {
    const run = async (microBatches: ToyBatch[]) => {
      const w = tf.tidy(() => tf.variable(tf.scalar(1))); // tidy frees the initial value; a variable survives it
      const engine = new LocalStepEngine(new Map([['w', w]]), toyObjective(w), new AdamW({ lr: 1e-3 }), { maxGradNorm: 0 });
      const result = await engine.step(microBatches, 1e-3);
      await engine.close();
      w.dispose();
      return result;
    };
    const before = tf.memory().numTensors;
    const whole = await run([merged]);
    const split = await run([first, masked, second]);
    expect(tf.memory().numTensors).toBe(before);
    for (const result of [whole, split]) {
      expect(result.loss).toBeCloseTo(3.4375, 6);
      expect(result.gradNorm).toBeCloseTo(4.125, 6);
      expect(result.metrics).toEqual({ pair_value: 2.75, token_value: 1.375 });
      expect(result.units).toEqual({ pairs: 4, tokens: 8 });
    }
    await expect(run([masked, masked])).rejects.toThrow('train: a step had no loss units (every micro-batch was fully masked)');
  });
});
