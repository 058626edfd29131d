/**
 * One projection with 8-bit weights: the codes (1 byte per value) and their float32 scales live in
 * plain typed arrays outside tfjs, and each call dequantizes the weight into a float32 tensor that
 * lives only for that call (the forward's per-layer tidy frees it), then runs the ordinary `x·W`.
 * Resident weight memory is therefore ~1 byte per value instead of 4; the price is one pass over
 * the codes per forward.
 *
 * Activations (when quantized) are fake-quantized per token: each row of x is quantized with its
 * own scale (INT8 absmax, or FP8 E4M3 with the upper bound on the scale) and dequantized back
 * before the product. Mathematically that is what an 8-bit GEMM computes, y = (q_x · q_W) ⊙ (s_x ⊗ s_W),
 * except that the sum of products is accumulated in float32 (as FBGEMM's FP8 GEMM also does) —
 * CPUs and tfjs have no FP8 matrix product, so FP8 is emulated value for value.
 *
 * Layout: codes are kept in the model's internal [in, out] layout (HF [out, in] transposed), so
 * dequantizing is one sequential pass; "per output row" (HF) scales are one per column here.
 */
import * as tf from '@tensorflow/tfjs';
import type { LinearFn } from '../llama.js';
import { transpose2d } from '../weights.js';
import { dequantizeFp8, dequantizeInt8, quantizeFp8Rowwise, quantizeInt8Absmax, type Grouping } from './absmax.js';
import { E4M3_VALUES } from './e4m3.js';

export type QuantScheme = 'int8-absmax' | 'fp8-rowwise';

/** How a projection's input is quantized per token, or not at all. */
export interface ActivationQuantization {
  kind: 'int8' | 'fp8';
  /** FP8 only: clamp of max|x| before the scale is taken (`activation_scale_ub`); undefined = unbounded. */
  upperBound?: number;
}

export interface QuantizedWeight {
  scheme: QuantScheme;
  numIn: number;
  numOut: number;
  /** INT8 codes (Int8Array) or E4M3 codes (Uint8Array), internal [in, out] row-major. */
  codes: Int8Array | Uint8Array;
  /** Dequantization multipliers: one per output (per-row) or a single one (per-tensor INT8). */
  scales: Float32Array;
  activations?: ActivationQuantization;
}

/** Transposes a row-major [rows, cols] byte matrix. */
function transposeBytes<T extends Int8Array | Uint8Array>(codes: T, rows: number, cols: number): T {
  const out = new (codes.constructor as new (n: number) => T)(codes.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = codes[r * cols + c]!;
  return out;
}

/**
 * Quantizes an HF-layout weight [out, in] (one row per output feature). `grouping` applies to
 * INT8; FP8 is always per row.
 */
export function quantizeWeight(
  hfValues: Float32Array,
  numOut: number,
  numIn: number,
  scheme: QuantScheme,
  opts: { grouping?: Grouping; activations?: ActivationQuantization } = {},
): QuantizedWeight {
  const q = scheme === 'int8-absmax' ? quantizeInt8Absmax(hfValues, numOut, numIn, opts.grouping ?? 'per-row') : quantizeFp8Rowwise(hfValues, numOut, numIn);
  return { scheme, numIn, numOut, codes: transposeBytes(q.codes, numOut, numIn), scales: q.scales, activations: opts.activations };
}

/** A quantized weight from checkpoint bytes: HF [out, in] codes and their scales ([out] or [1]). */
export function weightFromHf(scheme: QuantScheme, hfBytes: Uint8Array, scales: Float32Array, numOut: number, numIn: number, activations?: ActivationQuantization): QuantizedWeight {
  const codes = scheme === 'int8-absmax' ? new Int8Array(hfBytes.buffer, hfBytes.byteOffset, hfBytes.length) : hfBytes;
  return { scheme, numIn, numOut, codes: transposeBytes(codes, numOut, numIn), scales, activations };
}

/** The checkpoint form: HF [out, in] codes as bytes. */
export function hfBytesOf(w: QuantizedWeight): Uint8Array {
  const hf = transposeBytes(w.codes, w.numIn, w.numOut);
  return new Uint8Array(hf.buffer, hf.byteOffset, hf.length);
}

/** The float32 weight the codes stand for, internal [in, out]: code value × its output's scale. */
export function dequantizeWeight(w: QuantizedWeight): Float32Array {
  const { numIn, numOut, codes, scales } = w;
  const out = new Float32Array(codes.length);
  const perOutput = scales.length !== 1;
  const values = w.scheme === 'fp8-rowwise' ? E4M3_VALUES : undefined;
  for (let i = 0, k = 0; i < numIn; i++) {
    for (let o = 0; o < numOut; o++, k++) {
      const v = values ? values[codes[k]!]! : codes[k]!;
      out[k] = v * scales[perOutput ? o : 0]!;
    }
  }
  return out;
}

/** The float32 weight in HF layout [out, in] (for a float "twin" of a quantized model). */
export function dequantizeWeightHf(w: QuantizedWeight): Float32Array {
  return transpose2d(dequantizeWeight(w), w.numIn, w.numOut);
}

/** Bytes the weight keeps resident: 1 per code plus 4 per scale. */
export function residentBytes(w: QuantizedWeight): number {
  return w.codes.length + w.scales.byteLength;
}

/**
 * Per-token fake quantization of x [numRows, numCols] row-major: each row quantized with its own
 * scale and dequantized (the values an 8-bit GEMM would see).
 */
export function fakeQuantizeActivations(x: Float32Array, numRows: number, numCols: number, spec: ActivationQuantization): Float32Array {
  if (spec.kind === 'int8') {
    const q = quantizeInt8Absmax(x, numRows, numCols, 'per-row');
    return dequantizeInt8(q, numRows, numCols);
  }
  return dequantizeFp8(quantizeFp8Rowwise(x, numRows, numCols, spec.upperBound), numRows, numCols);
}

/** The `LinearFn` of a quantized weight: x [N, in] → [N, out]. */
export function quantizedLinear(w: QuantizedWeight): LinearFn {
  return (x: tf.Tensor2D) =>
    tf.tidy(() => {
      const [n, numIn] = x.shape;
      if (numIn !== w.numIn) throw new Error(`quantized linear: input has ${numIn} features, weight expects ${w.numIn}`);
      const weight = tf.tensor2d(dequantizeWeight(w), [w.numIn, w.numOut]); // [in, out], freed with this call
      const input = w.activations ? tf.tensor2d(fakeQuantizeActivations(x.dataSync() as Float32Array, n, numIn, w.activations), [n, numIn]) : x; // [N, in]
      return tf.matMul(input, weight) as tf.Tensor2D; // [N, out]
    });
}

/** A float projection whose input is fake-quantized per token: `fq(x)·W` (the twin of a quantized projection). */
export function activationQuantizedLinear(spec: ActivationQuantization): LinearFn {
  return (x: tf.Tensor2D, weight: tf.Variable | undefined) =>
    tf.tidy(() => {
      if (!weight) throw new Error('activation-quantized linear: no float weight');
      const [n, numIn] = x.shape;
      const input = tf.tensor2d(fakeQuantizeActivations(x.dataSync() as Float32Array, n, numIn, spec), [n, numIn]); // [N, in]
      return tf.matMul(input, weight) as tf.Tensor2D; // [N, out]
    });
}
