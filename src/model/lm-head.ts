/**
 * The LM head and the log-softmax of each row's label, over chunks of rows so that the logits of
 * all B·T positions never exist at once (Llama 3's 128,256-token vocabulary makes one 8 × 512
 * batch of logits 2.1 GB per copy).
 *
 * Each chunk of n rows is one `tf.customGrad` op:
 *   forward   z = h·Wᵀ [n, V] (tied: W is the embedding [V, C]) or h·W (lm_head [C, V]);
 *             log p(y) = z_y − logsumexp(z)                                   → [n]
 *   backward  recomputes z, then with p = softmax(z) and g = (onehot(y) − p) ⊙ dy  [n, V]:
 *             ∂h = g·W (tied) or g·Wᵀ;   ∂W = gᵀ·h (tied) or hᵀ·g
 * so the tape holds only h per chunk, never a chunk's logits: peak memory is one chunk's [n, V]
 * (a few copies) whatever the number of rows. A frozen head (LoRA) is captured, not an input, so
 * its gradient is not even computed.
 *
 * How many rows a chunk takes (`headChunkRows`): a fixed number, or `auto`, Liger-Kernel's rule
 * for its fused linear cross-entropy (Hsu et al. 2024, "Liger Kernel: Efficient Triton Kernels for
 * LLM Training", §3.3): n = N / ⌈V / C⌉, so one chunk's [n, V] logits hold about as many values as
 * the hidden states [N, C] themselves — flat as the vocabulary grows — with a floor of
 * `AUTO_MIN_CHUNK_VALUES` so that small heads run in one plain pass.
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from './llama.js';
import { tokenLogprobs } from '../../losses/logprobs.js';

/** How the head is split: rows per chunk (0: all rows in one plain pass) or `auto` (see the file comment). */
export type HeadChunking = number | 'auto';

/** `auto`'s floor on a chunk's logits: 2²² values (16 MiB of float32), under which chunking saves nothing worth its recompute. */
export const AUTO_MIN_CHUNK_VALUES = 1 << 22;

/**
 * Rows per chunk for `numRows` rows of width `hiddenSize` under a `vocabSize` head; a result
 * ≥ numRows means one plain pass (no chunking, no recompute).
 */
export function headChunkRows(numRows: number, vocabSize: number, hiddenSize: number, chunking: HeadChunking): number {
  if (chunking === 'auto') {
    const budget = Math.max(numRows * hiddenSize, AUTO_MIN_CHUNK_VALUES); // logits values per chunk
    return Math.max(1, Math.floor(budget / vocabSize));
  }
  return chunking <= 0 ? numRows : chunking;
}

/** z = h·head for h [n, C] → [n, V]. */
function headLogits(h: tf.Tensor2D, weight: tf.Tensor2D, transposed: boolean): tf.Tensor2D {
  return tf.matMul(h, weight, false, transposed); // [n, V]
}

/** log p(labels) of rows `hidden` [N, C] under the plain (unchunked) head → [N]. */
function plainLogprobs(hidden: tf.Tensor2D, labels: tf.Tensor1D, weight: tf.Tensor2D, transposed: boolean): tf.Tensor1D {
  const n = hidden.shape[0];
  const logits = tf.expandDims(headLogits(hidden, weight, transposed), 0) as tf.Tensor3D; // [1, N, V]
  return tf.reshape(tokenLogprobs(logits, tf.reshape(labels, [1, n]) as tf.Tensor2D), [n]) as tf.Tensor1D; // [N]
}

/** One chunk as a customGrad op (see the file comment). */
function chunkLogprobs(hidden: tf.Tensor2D, labels: tf.Tensor1D, weight: tf.Variable, transposed: boolean): tf.Tensor1D {
  const trainHead = weight.trainable;
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const h = args[0] as tf.Tensor2D;
    save([h, labels]);
    return {
      value: plainLogprobs(h, labels, weight as tf.Tensor2D, transposed), // [n]
      // tidy: the engine calls gradFunc outside any per-op scope, so without it every chunk's
      // [n, V] intermediates would live until the whole backward pass ends.
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.tidy(() => {
        const [savedH, savedLabels] = saved as [tf.Tensor2D, tf.Tensor1D];
        const w = weight as tf.Tensor2D;
        const z = headLogits(savedH, w, transposed); // [n, V]
        const p = tf.softmax(z); // [n, V]
        const onehot = tf.oneHot(savedLabels, z.shape[1]); // [n, V]
        const g = tf.mul(tf.sub(onehot, p), tf.expandDims(dy, 1)) as tf.Tensor2D; // [n, V]
        const dh = tf.matMul(g, w, false, !transposed); // [n, C]
        if (!trainHead) return [dh];
        const dw = transposed ? tf.matMul(g, savedH, true, false) : tf.matMul(savedH, g, true, false); // [V, C] or [C, V]
        return [dh, dw];
      }),
    };
  });
  return (trainHead ? op(hidden, weight) : op(hidden)) as tf.Tensor1D;
}

/**
 * log p(labels[i] | hidden[i]) for rows `hidden` [N, C] and int32 `labels` [N] → [N], the head
 * computed over chunks of rows as `chunking` says (`headChunkRows`; one chunk: the plain path).
 * Same values and gradients either way, up to float rounding.
 */
export function labelLogprobs(model: LlamaModel, hidden: tf.Tensor2D, labels: tf.Tensor1D, chunking: HeadChunking): tf.Tensor1D {
  return tf.tidy(() => {
    const { weight, transposed } = model.lmHeadWeight();
    const n = hidden.shape[0];
    if (n === 0) return tf.zeros([0]) as tf.Tensor1D;
    const chunkTokens = headChunkRows(n, model.dims.vocabSize, hidden.shape[1], chunking);
    if (chunkTokens >= n) return plainLogprobs(hidden, labels, weight as tf.Tensor2D, transposed);
    const parts: tf.Tensor1D[] = [];
    for (let start = 0; start < n; start += chunkTokens) {
      const size = Math.min(chunkTokens, n - start);
      const h = tf.slice(hidden, [start, 0], [size, hidden.shape[1]]) as tf.Tensor2D; // [n, C]
      const y = tf.slice(labels, [start], [size]) as tf.Tensor1D; // [n]
      parts.push(chunkLogprobs(h, y, weight, transposed));
    }
    return (parts.length === 1 ? parts[0] : tf.concat(parts)) as tf.Tensor1D; // [N]
  });
}
