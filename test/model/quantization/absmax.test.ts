import { describe, expect, it } from 'vitest';
import { dequantizeFp8, dequantizeInt8, FP8_MIN_SCALE, quantizeFp8Rowwise, quantizeInt8Absmax } from '../../../src/model/quantization/absmax.js';
import { E4M3_VALUES } from '../../../src/model/quantization/e4m3.js';
import { Rng } from '../../../src/util/rng.js';

function randomMatrix(numRows: number, numCols: number, seed: number, std = 1): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: numRows * numCols }, () => rng.normal() * std);
}

describe('INT8 absmax', () => {
  it('quantizes the textbook example exactly', () => {
    // s = 127 / 5.4 = 23.5185…; 1.2s = 28.2 → 28, −0.5s = −11.8 → −12, −4.3s = −101.1 → −101, …
    const x = Float32Array.of(1.2, -0.5, -4.3, 1.2, -3.1, 0.8, 2.4, 5.4);
    const q = quantizeInt8Absmax(x, 1, 8, 'per-tensor');
    expect(Array.from(q.codes)).toEqual([28, -12, -101, 28, -73, 19, 56, 127]);
    expect(q.scales[0]).toBeCloseTo(5.4 / 127, 7);
  });

  it('per-row: each row has its own scale and the dequantization error is at most scale/2 elementwise', () => {
    const [numRows, numCols] = [16, 40];
    const x = randomMatrix(numRows, numCols, 1);
    for (let c = 0; c < numCols; c++) x[3 * numCols + c]! *= 100; // one loud row
    const q = quantizeInt8Absmax(x, numRows, numCols, 'per-row');
    const back = dequantizeInt8(q, numRows, numCols);
    expect(q.scales.length).toBe(numRows);
    for (let r = 0; r < numRows; r++) {
      let max = 0;
      for (let c = 0; c < numCols; c++) max = Math.max(max, Math.abs(x[r * numCols + c]!));
      expect(q.scales[r]).toBeCloseTo(max / 127, 6);
      for (let c = 0; c < numCols; c++) {
        const i = r * numCols + c;
        expect(Math.abs(back[i]! - x[i]!)).toBeLessThanOrEqual((q.scales[r]! / 2) * (1 + 1e-6));
      }
      // the row maximum maps to ±127 exactly
      expect(Math.max(...Array.from(q.codes.subarray(r * numCols, (r + 1) * numCols), Math.abs))).toBe(127);
    }
    // per-tensor: the loud row sets everyone's scale, so the quiet rows lose precision
    const t = quantizeInt8Absmax(x, numRows, numCols, 'per-tensor');
    const tBack = dequantizeInt8(t, numRows, numCols);
    const rowError = (values: Float32Array, r: number) => Math.max(...Array.from({ length: numCols }, (_, c) => Math.abs(values[r * numCols + c]! - x[r * numCols + c]!)));
    expect(rowError(tBack, 0)).toBeGreaterThan(10 * rowError(back, 0));
  });

  it('an all-zero row gets codes 0 and a finite scale', () => {
    const q = quantizeInt8Absmax(new Float32Array(6), 2, 3, 'per-row');
    expect(Array.from(q.codes)).toEqual([0, 0, 0, 0, 0, 0]);
    expect(Array.from(dequantizeInt8(q, 2, 3))).toEqual([0, 0, 0, 0, 0, 0]);
  });
});

describe('FP8 row-wise', () => {
  it('maps each row maximum to 448 and keeps every value within half an E4M3 step of the row grid', () => {
    const [numRows, numCols] = [8, 50];
    const x = randomMatrix(numRows, numCols, 2, 0.05);
    const q = quantizeFp8Rowwise(x, numRows, numCols);
    const back = dequantizeFp8(q, numRows, numCols);
    for (let r = 0; r < numRows; r++) {
      const s = q.scales[r]!;
      let max = 0;
      for (let c = 0; c < numCols; c++) max = Math.max(max, Math.abs(x[r * numCols + c]!));
      expect(s).toBeCloseTo(max / 448, 9);
      for (let c = 0; c < numCols; c++) {
        const i = r * numCols + c;
        const scaled = Math.abs(x[i]! / s);
        // E4M3 spacing at |v|: 2^(floor(log2 |v|) − 3), 2^−9 in the subnormal range
        const step = scaled < 2 ** -6 ? 2 ** -9 : 2 ** (Math.floor(Math.log2(scaled)) - 3);
        expect(Math.abs(back[i]! - x[i]!)).toBeLessThanOrEqual((step / 2) * s * (1 + 1e-6));
        expect(Number.isNaN(E4M3_VALUES[q.codes[i]!]!)).toBe(false);
      }
    }
  });

  it('clamps the scale at the upper bound (values above it saturate at ±448·scale) and floors it for zero rows', () => {
    const x = Float32Array.of(3000, -0.5, 1, 0, 0, 0);
    const q = quantizeFp8Rowwise(x, 2, 3, 1200);
    expect(q.scales[0]).toBeCloseTo(1200 / 448, 6);
    const back = dequantizeFp8(q, 2, 3);
    expect(back[0]).toBeCloseTo(1200, 3); // 3000 saturated at 448 · (1200/448)
    expect(q.scales[1]).toBeCloseTo(FP8_MIN_SCALE, 12);
    expect(Array.from(back.subarray(3))).toEqual([0, 0, 0]);
  });
});
