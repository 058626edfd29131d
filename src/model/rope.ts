/**
 * Rotary position embeddings (Su et al. 2021, "RoFormer") in Hugging Face's split-half
 * convention: the first and second halves of each head are the two coordinates of each
 * rotated pair (`rotate_half(x) = cat(-x2, x1)`), not interleaved pairs as in the paper.
 *
 *   q' = q ⊙ cos(pθ) + rotate_half(q) ⊙ sin(pθ),  θ_i = base^(−2i/d),  cos/sin repeated over both halves.
 *
 * `llama3` scaling (Llama 3.1) divides the low frequencies by `factor` and interpolates the
 * band between, exactly as transformers' `_compute_llama3_parameters`.
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaConfig } from './config.js';

/** Inverse frequencies θ_i, length headDim/2, with the config's scaling applied. */
export function ropeInverseFrequencies(config: LlamaConfig, headDim: number): Float64Array {
  const scaling = config.rope_parameters ?? config.rope_scaling ?? undefined;
  const base = scaling?.rope_theta ?? config.rope_theta;
  const numFreqs = headDim / 2;
  const invFreq = new Float64Array(numFreqs);
  for (let i = 0; i < numFreqs; i++) invFreq[i] = 1 / Math.pow(base, (2 * i) / headDim);
  const kind = scaling?.rope_type ?? scaling?.type ?? 'default';
  if (kind !== 'llama3' || !scaling) return invFreq;

  const factor = scaling.factor ?? 8;
  const lowFreqFactor = scaling.low_freq_factor ?? 1;
  const highFreqFactor = scaling.high_freq_factor ?? 4;
  const oldContextLen = scaling.original_max_position_embeddings ?? 8192;
  const lowFreqWavelen = oldContextLen / lowFreqFactor;
  const highFreqWavelen = oldContextLen / highFreqFactor;
  for (let i = 0; i < numFreqs; i++) {
    const wavelen = (2 * Math.PI) / invFreq[i];
    if (wavelen < highFreqWavelen) continue; // 1) high frequencies: unchanged
    if (wavelen > lowFreqWavelen) {
      invFreq[i] = invFreq[i] / factor; // 2) low frequencies: scaled down by factor
      continue;
    }
    // 3) the band between: interpolate between scaled and unscaled
    const smooth = (oldContextLen / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
    invFreq[i] = (1 - smooth) * (invFreq[i] / factor) + smooth * invFreq[i];
  }
  return invFreq;
}

/** cos and sin tables for the given positions: each [numPositions, headDim] (halves repeated). */
export function ropeTables(invFreq: Float64Array, positions: ArrayLike<number>): { cos: Float32Array; sin: Float32Array } {
  const half = invFreq.length;
  const headDim = 2 * half;
  const cos = new Float32Array(positions.length * headDim);
  const sin = new Float32Array(positions.length * headDim);
  for (let p = 0; p < positions.length; p++) {
    const pos = positions[p];
    for (let i = 0; i < half; i++) {
      // HF computes pos·θ in float32; float64 here differs by < 1 ulp of the angle.
      const angle = Math.fround(pos * Math.fround(invFreq[i]));
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[p * headDim + i] = c;
      cos[p * headDim + half + i] = c;
      sin[p * headDim + i] = s;
      sin[p * headDim + half + i] = s;
    }
  }
  return { cos, sin };
}

/** rotate_half(x) = cat(−x[..., d/2:], x[..., :d/2]) over the last axis. */
function rotateHalf(x: tf.Tensor4D): tf.Tensor4D {
  const [b, h, t, d] = x.shape;
  const x1 = tf.slice(x, [0, 0, 0, 0], [b, h, t, d / 2]); // [B, H, T, D/2]
  const x2 = tf.slice(x, [0, 0, 0, d / 2], [b, h, t, d / 2]); // [B, H, T, D/2]
  return tf.concat([tf.neg(x2), x1], 3); // [B, H, T, D]
}

/**
 * Applies RoPE to x [B, H, T, D] with cos/sin tensors [B, 1, T, D] (one position per token,
 * so packed rows and forks at any offset rotate correctly).
 */
export function applyRope(x: tf.Tensor4D, cos: tf.Tensor4D, sin: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => tf.add(tf.mul(x, cos), tf.mul(rotateHalf(x), sin)));
}
