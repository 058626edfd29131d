/**
 * The negative log-likelihood term on the chosen responses that Llama 3 adds to DPO.
 *
 * RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization") adds a negative
 * log-likelihood term on the winning sequence to DPO. Llama 3 (arXiv 2407.21783 §4.1.4) does the
 * same with a scaling coefficient α = 0.2 on the NLL (β = 0.1), as TRL's `rpo_alpha` does:
 *
 *   L = mean_b L_DPO(b) + α · L_NLL,   L_NLL = − Σ_{b,t} m[b,t] log πθ(y_w[b,t] | ·) / Σ_{b,t} m[b,t]
 *
 * The NLL keeps the chosen responses likely while DPO widens the chosen/rejected gap (plain DPO
 * tends to lower the likelihood of both).
 *
 * Departure from the paper: Pang et al. normalise each example's NLL by its own length and then
 * average over the batch; like TRL's `rpo_alpha`, we average over all chosen tokens of the batch
 * at once (the two agree when responses have equal length). Which tokens count is the caller's
 * mask: the chosen response mask, with or without the formatting tokens of `formattingTokenMask`.
 *
 * These are the one-batch forms. Training (`src/tasks/dpo.ts`) takes the two numerators per
 * micro-batch — Σ_b L_DPO(b) and α · `tokenNllSum` — and the step engine divides them by the
 * step's global pair and chosen-token counts, so the means run over the whole step's batch.
 */
import * as tf from '@tensorflow/tfjs';
import { maskedMean } from './logprobs.js';

/**
 * Mean token cross-entropy over the chosen responses' tokens.
 *
 * @param chosenTokenLogps [B, T] policy token log-probs of the chosen sequences (`tokenLogprobs`).
 * @param chosenMask [B, T] float32, 1 on the chosen response tokens that count.
 */
export function chosenNllLoss(chosenTokenLogps: tf.Tensor2D, chosenMask: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => tf.neg(maskedMean(chosenTokenLogps, chosenMask)) as tf.Scalar);
}

/**
 * The RPO / Llama 3 objective: mean(preferenceLosses) + α · nllLoss.
 *
 * @param preferenceLosses [B] per-pair losses from a `PreferenceLoss`.
 * @param nllLoss the scalar from `chosenNllLoss`.
 * @param nllCoefficient α ≥ 0 (Llama 3: 0.2; 0 gives plain DPO).
 */
export function preferenceWithNllLoss(preferenceLosses: tf.Tensor1D, nllLoss: tf.Scalar, nllCoefficient: number): tf.Scalar {
  if (!(nllCoefficient >= 0) || !Number.isFinite(nllCoefficient)) {
    throw new Error(`losses/nll.ts: nllCoefficient = ${nllCoefficient}; expected a finite number ≥ 0`);
  }
  return tf.tidy(() => tf.add(tf.mean(preferenceLosses), tf.mul(nllCoefficient, nllLoss)) as tf.Scalar);
}
