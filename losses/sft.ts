/**
 * Supervised fine-tuning loss: token cross-entropy on response tokens only.
 *
 *   L_SFT = − Σ_{b,t} m[b,t] · log πθ(y[b,t] | y[b,<t], x_b) / Σ_{b,t} m[b,t]
 *
 * where m is 1 on response tokens and 0 on prompt and padding tokens (Llama 3, arXiv 2407.21783
 * §4.1.3: standard cross-entropy on the target tokens, the loss on prompt tokens masked). The mean
 * runs over every unmasked token in the batch, not per row — the same as Hugging Face's
 * cross-entropy with ignore_index = −100 — so long responses weigh more than short ones.
 *
 * Gradient accumulation: the mean is over this micro-batch's tokens. To reproduce one large batch,
 * sum the numerators (`tokenNllSum`) and divide by the whole batch's token count once — what the
 * training tasks and the step engine do.
 */
import * as tf from '@tensorflow/tfjs';
import { maskedMean } from './logprobs.js';

export interface SftLossResult {
  /** Mean negative log-likelihood over the unmasked tokens; 0 when no token is unmasked. */
  loss: tf.Scalar;
  /** Number of unmasked tokens (Σ mask), the denominator of `loss`. */
  numTokens: number;
}

/**
 * @param tokenLogps [B, T] from `tokenLogprobs`.
 * @param lossMask [B, T] float32, 1 on response tokens, 0 on prompt and padding.
 */
export function sftLoss(tokenLogps: tf.Tensor2D, lossMask: tf.Tensor2D): SftLossResult {
  const numTokens = tf.tidy(() => tf.sum(lossMask).dataSync()[0]);
  const loss = tf.tidy(() => tf.neg(maskedMean(tokenLogps, lossMask)) as tf.Scalar);
  return { loss, numTokens };
}
