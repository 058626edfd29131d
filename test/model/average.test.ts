import { describe, expect, it } from 'vitest';
import { averageWeights, type NamedTensor } from '../../src/model/average.js';

function checkpoint(entries: Record<string, [number[], number[]]>): Map<string, NamedTensor> {
  return new Map(Object.entries(entries).map(([name, [shape, data]]) => [name, { shape, data: Float32Array.from(data) }]));
}

const a = () => checkpoint({ 'model.norm.weight': [[2], [1, 2]], 'lm_head.weight': [[1, 1], [3]] });
const b = () => checkpoint({ 'model.norm.weight': [[2], [3, 6]], 'lm_head.weight': [[1, 1], [5]] });

describe('averageWeights', () => {
  it('averages uniformly by default', () => {
    // ([1, 2] + [3, 6]) / 2 = [2, 4];  (3 + 5) / 2 = 4
    const avg = averageWeights([a(), b()]);
    expect([...avg.keys()]).toEqual(['lm_head.weight', 'model.norm.weight']);
    expect(Array.from(avg.get('model.norm.weight')!.data)).toEqual([2, 4]);
    expect(avg.get('lm_head.weight')).toEqual({ shape: [1, 1], data: Float32Array.from([4]) });
  });

  it('weights by normalized coefficients', () => {
    // [3, 1] → 0.75, 0.25:  0.75·[1, 2] + 0.25·[3, 6] = [1.5, 3];  0.75·3 + 0.25·5 = 3.5
    const avg = averageWeights([a(), b()], [3, 1]);
    expect(Array.from(avg.get('model.norm.weight')!.data)).toEqual([1.5, 3]);
    expect(Array.from(avg.get('lm_head.weight')!.data)).toEqual([3.5]);
    // one checkpoint with weight 0 is the other checkpoint; inputs are not modified
    const first = a();
    expect(Array.from(averageWeights([first, b()], [1, 0]).get('model.norm.weight')!.data)).toEqual([1, 2]);
    expect(Array.from(first.get('model.norm.weight')!.data)).toEqual([1, 2]);
  });

  it('averages three checkpoints with one rounding to float32', () => {
    // (0.1 + 0.2 + 0.3) / 3 = 0.2 in float64, then rounded once
    const sets = [0.1, 0.2, 0.3].map((x) => checkpoint({ w: [[1], [x]] }));
    expect(averageWeights(sets).get('w')!.data[0]).toBe(Math.fround((Math.fround(0.1) + Math.fround(0.2) + Math.fround(0.3)) / 3));
  });

  it('names the tensor when names or shapes disagree', () => {
    const missing = checkpoint({ 'model.norm.weight': [[2], [1, 2]] });
    expect(() => averageWeights([a(), missing])).toThrow(/checkpoint 1 lacks tensor 'lm_head.weight'/);
    const extra = checkpoint({ 'model.norm.weight': [[2], [1, 2]], 'lm_head.weight': [[1, 1], [3]], 'score.weight': [[1], [0]] });
    expect(() => averageWeights([a(), extra])).toThrow(/checkpoint 1 has tensor 'score.weight' that checkpoint 0 lacks/);
    const reshaped = checkpoint({ 'model.norm.weight': [[1, 2], [1, 2]], 'lm_head.weight': [[1, 1], [3]] });
    expect(() => averageWeights([a(), reshaped])).toThrow(/tensor 'model.norm.weight' has shape \[1, 2\] in checkpoint 1 but \[2\] in checkpoint 0/);
    const short = checkpoint({ 'model.norm.weight': [[2], [1]], 'lm_head.weight': [[1, 1], [3]] });
    expect(() => averageWeights([a(), short])).toThrow(/tensor 'model.norm.weight' in checkpoint 1 has 1 values but shape \[2\] needs 2/);
    expect(() => averageWeights([a(), b()], [1])).toThrow(/1 coefficients for 2 checkpoints/);
    expect(() => averageWeights([a(), b()], [0, 0])).toThrow(/sum to 0/);
    expect(() => averageWeights([])).toThrow(/no checkpoints/);
  });
});
