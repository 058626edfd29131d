/**
 * Checkpoint weight averaging: θ = Σᵢ cᵢ θᵢ / Σᵢ cᵢ, tensor by tensor.
 *
 * Llama 3 (arXiv 2407.21783, §4.1.5) averages the weights of reward, SFT and DPO models
 * obtained with different data or hyperparameters at each stage ("model soups", Wortsman et
 * al. 2022). Averaging works on plain `{shape, data}` records, so it runs on checkpoints read
 * with `readSafetensors` without building a model or touching a tf backend.
 *
 * Sums run in float64 and are rounded to float32 once at the end: the float32 result carries a
 * single rounding, however many checkpoints are averaged.
 */
import { numElements, type NamedTensor } from './safetensors.js';

export type { NamedTensor };

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Checks coefficients and returns them divided by their sum. */
function normalizedCoefficients(numCheckpoints: number, coefficients: number[] | undefined): number[] {
  if (coefficients === undefined) return new Array<number>(numCheckpoints).fill(1 / numCheckpoints);
  if (coefficients.length !== numCheckpoints) {
    throw new Error(`average: ${coefficients.length} coefficients for ${numCheckpoints} checkpoints`);
  }
  coefficients.forEach((c, i) => {
    if (!(c >= 0) || !Number.isFinite(c)) throw new Error(`average: coefficient ${i} must be a finite number ≥ 0, got ${c}`);
  });
  const total = coefficients.reduce((a, b) => a + b, 0);
  if (!(total > 0)) throw new Error('average: coefficients sum to 0');
  return coefficients.map((c) => c / total);
}

/**
 * The uniform (default) or weighted average of several checkpoints. `coefficients[i]` weighs
 * checkpoint i; they must be ≥ 0 and are normalized to sum to 1 (so [2, 1] means 2/3 and 1/3).
 * Every checkpoint must hold the same tensor names with the same shapes; the error names the
 * first tensor that disagrees. The result is new memory, keyed in sorted-name order.
 */
export function averageWeights(weightSets: Map<string, NamedTensor>[], coefficients?: number[]): Map<string, NamedTensor> {
  if (weightSets.length === 0) throw new Error('average: no checkpoints to average');
  const weights = normalizedCoefficients(weightSets.length, coefficients);
  const reference = weightSets[0]!;
  const names = [...reference.keys()].sort();
  weightSets.forEach((set, i) => {
    for (const name of names) {
      const tensor = set.get(name);
      if (!tensor) throw new Error(`average: checkpoint ${i} lacks tensor '${name}' (present in checkpoint 0)`);
      const expected = reference.get(name)!.shape;
      if (tensor.shape.length !== expected.length || tensor.shape.some((d, k) => d !== expected[k])) {
        throw new Error(`average: tensor '${name}' has shape ${formatShape(tensor.shape)} in checkpoint ${i} but ${formatShape(expected)} in checkpoint 0`);
      }
      if (tensor.data.length !== numElements(tensor.shape)) {
        throw new Error(`average: tensor '${name}' in checkpoint ${i} has ${tensor.data.length} values but shape ${formatShape(tensor.shape)} needs ${numElements(tensor.shape)}`);
      }
    }
    if (set.size !== names.length) {
      const extra = [...set.keys()].sort().find((name) => !reference.has(name))!;
      throw new Error(`average: checkpoint ${i} has tensor '${extra}' that checkpoint 0 lacks`);
    }
  });
  const averaged = new Map<string, NamedTensor>();
  for (const name of names) {
    const shape = reference.get(name)!.shape;
    const sum = new Float64Array(numElements(shape));
    weightSets.forEach((set, i) => {
      const data = set.get(name)!.data;
      const w = weights[i]!;
      for (let k = 0; k < sum.length; k++) sum[k] += w * data[k]!;
    });
    averaged.set(name, { shape: [...shape], data: Float32Array.from(sum) });
  }
  return averaged;
}
