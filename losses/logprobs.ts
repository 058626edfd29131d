/**
 * Token and sequence log-probabilities: the quantity every post-training loss starts from.
 *
 * log p(y_t | y_<t, x) = z[y_t] − logsumexp(z), where z are the logits at position t.
 * Subtracting logsumexp (which tfjs computes as max + log Σ exp(z − max)) keeps this finite for
 * any logit scale, unlike log(softmax(z)).
 *
 * The label's logit is picked with `tf.gather` on the logits flattened to [B·T·V] at flat
 * indices (b·T + t)·V + label: its gradient is an UnsortedSegmentSum into [B·T·V], so no one-hot
 * [B, T, V] tensor is built in the forward pass (`gatherND` would avoid the reshape but has no
 * gradient in tfjs).
 */
import * as tf from '@tensorflow/tfjs';

/**
 * Log-probability of each label under the logits.
 *
 * @param logits [B, T, V] float32, the model's outputs.
 * @param labels [B, T] int32, already aligned: labels[b, t] is the token predicted at position t
 *   (the input shifted left by one). Every label must be a vocabulary id in [0, V); positions that
 *   must not count (prompt, padding) carry any valid id (e.g. the pad id) and a 0 in the mask
 *   handed to `sequenceLogps`/`maskedMean` — Hugging Face's ignore index −100 is rejected, since a
 *   negative flat index would silently read the neighbouring position's logits.
 * @returns [B, T] float32, log p(labels[b, t]).
 */
export function tokenLogprobs(logits: tf.Tensor3D, labels: tf.Tensor2D): tf.Tensor2D {
  const [numRows, numSteps, vocabSize] = logits.shape;
  if (labels.shape[0] !== numRows || labels.shape[1] !== numSteps) {
    throw new Error(`losses/logprobs.ts: labels shape [${labels.shape}] does not match logits [${logits.shape}] in its first two dims`);
  }
  if (labels.dtype !== 'int32') throw new Error(`losses/logprobs.ts: labels dtype is ${labels.dtype}; expected int32`);
  if (numRows * numSteps * vocabSize > 2 ** 31 - 1) {
    throw new Error(`losses/logprobs.ts: logits [${logits.shape}] hold more than 2^31 − 1 values; int32 flat indices cannot address them, split the batch`);
  }
  assertLabelsInVocab(labels, vocabSize);
  return tf.tidy(() => {
    const logNormalizer = logSumExpLastAxis(logits) as tf.Tensor2D; // [B, T]
    const flatLogits = tf.reshape(logits, [numRows * numSteps * vocabSize]); // [B·T·V]
    const rowOffsets = tf.mul(tf.range(0, numRows * numSteps, 1, 'int32'), tf.scalar(vocabSize, 'int32')); // [B·T]
    const flatIndices = tf.add(rowOffsets, tf.reshape(labels, [numRows * numSteps])); // [B·T]
    const labelLogits = tf.reshape(tf.gather(flatLogits, flatIndices), [numRows, numSteps]); // [B, T]
    return tf.sub(labelLogits, logNormalizer) as tf.Tensor2D;
  });
}

/** Throws a one-line error naming the first label outside [0, vocabSize). Reads the labels (small: [B, T]). */
/**
 * log Σ_v exp(x_v) over the last axis, with a hand-written gradient: ∂/∂x = softmax(x).
 * tf.logSumExp differentiates through its max-subtraction too (an Equal mask over every logit,
 * B·T·V elements), although that term cancels exactly; here one exp over the logits is all the
 * backward pass costs.
 */
const logSumExpLastAxis = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const x = args[0] as tf.Tensor;
  const save = args[1] as tf.GradSaveFunc;
  const max = tf.max(x, -1, true); // [..., 1]
  const lse = tf.add(tf.log(tf.sum(tf.exp(tf.sub(x, max)), -1, true)), max); // [..., 1]
  save([x, lse]);
  return {
    value: tf.squeeze(lse, [-1]), // [...]
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [input, logNormalizer] = saved;
      return tf.mul(tf.expandDims(dy, -1), tf.exp(tf.sub(input, logNormalizer))); // [..., V]
    },
  };
});

function assertLabelsInVocab(labels: tf.Tensor2D, vocabSize: number): void {
  const values = labels.dataSync();
  const numSteps = labels.shape[1];
  for (let i = 0; i < values.length; i++) {
    const id = values[i];
    if (id < 0 || id >= vocabSize) {
      throw new Error(
        `losses/logprobs.ts: labels[${Math.floor(i / numSteps)}, ${i % numSteps}] = ${id} is outside the vocabulary [0, ${vocabSize}); put a valid id (e.g. pad) there and mask it out`,
      );
    }
  }
}

/**
 * Masked sum of token log-probs per row: log π(y | x) = Σ_t mask[b, t] · logp[b, t].
 *
 * This is the sequence log-likelihood DPO compares (Rafailov et al. 2023 use the sum, not the mean).
 *
 * @param tokenLogps [B, T] from `tokenLogprobs`.
 * @param mask [B, T] float32, 1 on response tokens that count, 0 elsewhere.
 * @returns [B].
 */
export function sequenceLogps(tokenLogps: tf.Tensor2D, mask: tf.Tensor2D): tf.Tensor1D {
  assertSameShape('sequenceLogps', tokenLogps, mask);
  return tf.tidy(() => tf.sum(tf.mul(tokenLogps, mask), -1) as tf.Tensor1D); // [B]
}

/**
 * Token negative log-likelihood summed over the masked tokens of the whole batch:
 *
 *   S = − Σ_{b,t} mask[b, t] · logp[b, t]
 *
 * The numerator of the token-mean cross-entropy (`sftLoss`, `chosenNllLoss`). A trainer that
 * accumulates micro-batches divides the sum by the GLOBAL batch's Σ mask once, so the result is
 * the mean over every token of the step however the batch was cut.
 *
 * @param tokenLogps [B, T] from `tokenLogprobs`.
 * @param mask [B, T] float32, 1 on the tokens that count, 0 elsewhere.
 */
export function tokenNllSum(tokenLogps: tf.Tensor2D, mask: tf.Tensor2D): tf.Scalar {
  assertSameShape('tokenNllSum', tokenLogps, mask);
  return tf.tidy(() => tf.neg(tf.sum(tf.mul(tokenLogps, mask))) as tf.Scalar);
}

/**
 * Mean of `values` over the positions where `mask` is non-zero, across the whole tensor:
 * Σ mask·values / Σ mask. An all-zero mask gives 0 (not NaN) and a zero gradient.
 *
 * @param values any shape, float32.
 * @param mask same shape as `values`, float32 (0/1, or weights).
 */
export function maskedMean(values: tf.Tensor, mask: tf.Tensor): tf.Scalar {
  assertSameShape('maskedMean', values, mask);
  return tf.tidy(() => {
    const total = tf.sum(tf.mul(values, mask)); // []
    const count = tf.sum(mask); // []
    const safeCount = tf.where(tf.equal(count, 0), tf.onesLike(count), count); // []
    return tf.div(total, safeCount) as tf.Scalar;
  });
}

function assertSameShape(fn: string, values: tf.Tensor, mask: tf.Tensor): void {
  if (values.shape.length !== mask.shape.length || values.shape.some((d, i) => d !== mask.shape[i])) {
    throw new Error(`losses/logprobs.ts: ${fn} mask shape [${mask.shape}] does not match values [${values.shape}]`);
  }
}
