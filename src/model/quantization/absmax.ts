/**
 * Symmetric 8-bit quantization of matrices and activations, pure functions over typed arrays.
 *
 * INT8 absmax (Dettmers et al. 2022, "LLM.int8()", §2.1; the textbook scheme): a group of values
 * (a whole tensor, one output row of a weight, or one token's activations) is scaled by
 *   s = 127 / max|x|,   q = round(s · x) ∈ [−127, 127],   x ≈ q / s.
 * Example: [1.2, −0.5, −4.3, 1.2, −3.1, 0.8, 2.4, 5.4] → s = 127/5.4 → [28, −12, −101, 28, −73, 19, 56, 127].
 *
 * FP8 row-wise (Llama 3 report §4.2; FBGEMM's `quantize_fp8_per_row`): each weight output row and
 * each token's activations get a scale so that the group's absolute maximum lands on the largest
 * E4M3 value, 448; values are then rounded onto the E4M3 grid (see `e4m3.ts`). For activations the
 * maximum is first clamped to an upper bound (`activation_scale_ub`, 1200 in Meta's released
 * checkpoints): without it one outlier token gets a huge scale, every other value of that token
 * falls below the smallest FP8 steps, and the model "sometimes produced wrong answers".
 *
 * Stored scales follow the checkpoint conventions (compressed-tensors, FBGEMM): the *dequantization*
 * multiplier `d = max|x| / 127` (or `/ 448`), so x ≈ q · d. The textbook `s` of the formula above is 1/d.
 * Rounding is half to even everywhere (as `torch.round` and the FP8 casts).
 */
import { E4M3_MAX, E4M3_VALUES, encodeE4M3, roundHalfEven } from './e4m3.js';

/** Largest INT8 code used by symmetric absmax (−128 is left out so the range is symmetric). */
export const INT8_MAX = 127;

/**
 * FBGEMM's floor on an FP8 scale (`1 / (448 · 512)`), so an all-zero row gets a finite, non-zero
 * scale instead of 0 (whose inverse is infinite).
 */
export const FP8_MIN_SCALE = 1 / (E4M3_MAX * 512);

/** One quantized group layout: codes plus one dequantization multiplier per group. */
export interface QuantizedGroups<Codes extends Int8Array | Uint8Array> {
  /** 8-bit codes, same layout as the input. */
  codes: Codes;
  /** Dequantization multipliers (x ≈ value(code) · scale), one per group. */
  scales: Float32Array;
}

/** Which elements form a group of a row-major [numRows, numCols] matrix. */
export type Grouping = 'per-tensor' | 'per-row';

/** Group maxima of |x|: one for the tensor, or one per row. */
function groupAbsMax(values: Float32Array, numRows: number, numCols: number, grouping: Grouping): Float32Array {
  const numGroups = grouping === 'per-tensor' ? 1 : numRows;
  const maxima = new Float32Array(numGroups);
  for (let r = 0; r < numRows; r++) {
    const g = grouping === 'per-tensor' ? 0 : r;
    let m = maxima[g]!;
    for (let c = 0, i = r * numCols; c < numCols; c++, i++) {
      const a = Math.abs(values[i]!);
      if (a > m) m = a;
    }
    maxima[g] = m;
  }
  return maxima;
}

/**
 * INT8 absmax of a row-major [numRows, numCols] matrix, per tensor or per row. A group that is all
 * zeros gets scale 1 (its codes are 0 whatever the scale).
 */
export function quantizeInt8Absmax(values: Float32Array, numRows: number, numCols: number, grouping: Grouping): QuantizedGroups<Int8Array> {
  if (values.length !== numRows * numCols) throw new Error(`quantizeInt8Absmax: ${values.length} values for [${numRows}, ${numCols}]`);
  const maxima = groupAbsMax(values, numRows, numCols, grouping);
  const scales = new Float32Array(maxima.length);
  for (let g = 0; g < maxima.length; g++) scales[g] = maxima[g]! > 0 ? maxima[g]! / INT8_MAX : 1;
  const codes = new Int8Array(values.length);
  for (let r = 0; r < numRows; r++) {
    // (x · 127) / max is exact for x = max: a float32 times 127 needs 31 bits of a float64's 53.
    const max = maxima[grouping === 'per-tensor' ? 0 : r]!;
    if (max === 0) continue;
    for (let c = 0, i = r * numCols; c < numCols; c++, i++) {
      codes[i] = Math.max(-INT8_MAX, Math.min(INT8_MAX, roundHalfEven((values[i]! * INT8_MAX) / max)));
    }
  }
  return { codes, scales };
}

/**
 * FP8 (E4M3) row-wise: scale_r = max(min(max|x_r|, upperBound) / 448, FP8_MIN_SCALE), codes =
 * E4M3(x / scale_r), saturating at ±448 (only values clipped by the upper bound saturate).
 * `upperBound` undefined means unbounded (weights; activations of the failure-mode demonstration).
 */
export function quantizeFp8Rowwise(values: Float32Array, numRows: number, numCols: number, upperBound?: number): QuantizedGroups<Uint8Array> {
  if (values.length !== numRows * numCols) throw new Error(`quantizeFp8Rowwise: ${values.length} values for [${numRows}, ${numCols}]`);
  const maxima = groupAbsMax(values, numRows, numCols, 'per-row');
  const scales = new Float32Array(numRows);
  const codes = new Uint8Array(values.length);
  for (let r = 0; r < numRows; r++) {
    const clamped = upperBound === undefined ? maxima[r]! : Math.min(maxima[r]!, upperBound);
    const scale = Math.max(clamped / E4M3_MAX, FP8_MIN_SCALE);
    scales[r] = scale;
    const stored = scales[r]!; // the float32 scale a checkpoint holds: divide by exactly that
    for (let c = 0, i = r * numCols; c < numCols; c++, i++) codes[i] = encodeE4M3(values[i]! / stored);
  }
  return { codes, scales };
}

/** Values of INT8 codes times their group's scale, [numRows, numCols] row-major. */
export function dequantizeInt8(q: QuantizedGroups<Int8Array>, numRows: number, numCols: number): Float32Array {
  const out = new Float32Array(q.codes.length);
  if (q.scales.length !== 1 && q.scales.length !== numRows) throw new Error(`dequantizeInt8: ${q.scales.length} scales for ${numRows} rows`);
  const perRow = q.scales.length !== 1;
  for (let r = 0; r < numRows; r++) {
    const s = q.scales[perRow ? r : 0]!;
    for (let c = 0, i = r * numCols; c < numCols; c++, i++) out[i] = q.codes[i]! * s;
  }
  return out;
}

/** Values of E4M3 codes times their row's scale, [numRows, numCols] row-major. */
export function dequantizeFp8(q: QuantizedGroups<Uint8Array>, numRows: number, numCols: number): Float32Array {
  const out = new Float32Array(q.codes.length);
  for (let r = 0; r < numRows; r++) {
    const s = q.scales[r]!;
    for (let c = 0, i = r * numCols; c < numCols; c++, i++) out[i] = E4M3_VALUES[q.codes[i]!]! * s;
  }
  return out;
}
