/**
 * Global-norm gradient clipping with PyTorch `torch.nn.utils.clip_grad_norm_` semantics
 * (Pascanu et al. 2013, "On the difficulty of training recurrent neural networks"):
 *
 *   ‖g‖ = √(Σ_params ‖g_p‖²)          (the 2-norm of all gradients as one vector)
 *   scale = maxNorm / (‖g‖ + 1e-6)
 *   g ← g · scale   only when scale < 1
 *
 * The pre-clip norm is returned because it is the number worth logging (a rising grad norm
 * is the usual early sign of a loss that is about to go NaN).
 */
import * as tf from '@tensorflow/tfjs';
import { sortedNames, type GradMap } from './grad-accumulator.js';

/** Added to the norm before dividing, as PyTorch does, so a zero gradient does not divide by zero. */
const CLIP_EPS = 1e-6;

/**
 * ‖g‖ over all tensors of `grads`, computed as PyTorch does: the 2-norm of the per-tensor
 * 2-norms, summed in sorted-name order. 0 for an empty map. NaN/Infinity pass through.
 */
export function globalNorm(grads: GradMap): number {
  const names = sortedNames(grads);
  if (names.length === 0) return 0;
  const norm = tf.tidy(() => {
    const perTensorNorms = names.map((name) => tf.sqrt(tf.sum(tf.square(grads.get(name)!)))); // scalars
    const stacked = tf.stack(perTensorNorms); // [numTensors]
    return tf.sqrt(tf.sum(tf.square(stacked))); // scalar
  });
  const value = norm.dataSync()[0];
  norm.dispose();
  return value;
}

/**
 * Scales `grads` so that their global norm is at most `maxNorm`; returns the result and the
 * pre-clip norm.
 *
 * Ownership: this takes ownership of `grads`. When clipping applies, each input tensor is
 * disposed and replaced by its scaled copy; otherwise the same map is returned unchanged. Either
 * way the caller uses (and later disposes) only the returned map.
 *
 * A non-finite norm (NaN or ±Infinity somewhere) leaves the gradients unscaled and is returned
 * as is: scaling would only spread NaN, so the trainer should check `Number.isFinite(norm)` and
 * skip the step.
 */
export function clipByGlobalNorm(grads: GradMap, maxNorm: number): { grads: GradMap; norm: number } {
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) throw new Error(`grad-clip: maxNorm must be a finite number > 0, got ${maxNorm}`);
  const norm = globalNorm(grads);
  if (!Number.isFinite(norm)) return { grads, norm };
  const scale = maxNorm / (norm + CLIP_EPS);
  if (scale >= 1) return { grads, norm };
  const clipped: GradMap = new Map();
  for (const name of sortedNames(grads)) {
    const grad = grads.get(name)!;
    clipped.set(name, tf.tidy(() => tf.mul(grad, scale)));
    grad.dispose();
  }
  return { grads: clipped, norm };
}
