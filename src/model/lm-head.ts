/**
 * The LM head and the log-softmax of each row's label, over chunks of rows so that the logits of
 * all B·T positions never exist at once (Llama 3's 128,256-token vocabulary makes one 8 × 512
 * batch of logits 2.1 GB per copy).
 *
 * The whole head is one `tf.customGrad` op over the N rows:
 *   forward   row chunks of n: z = h·Wᵀ [n, V] (tied: W is the embedding [V, C]) or h·W (lm_head
 *             [C, V]); log p(y) = z_y − lse, lse = logsumexp(z)                       → [N], lse [N] saved
 *   backward  vocabulary blocks of b columns (b·N = the chunk's n·V logits): z_b = h·W_bᵀ [N, b],
 *             g_b = (onehot_b(y) − exp(z_b − lse)) ⊙ dy [N, b];
 *             ∂h = Σ_b g_b·W_b,   ∂W_b = g_bᵀ·h (tied) or hᵀ·g_b, concatenated once at the end
 * so the tape holds only h and lse, never logits: peak memory is one chunk's [n, V] (a few copies)
 * whatever the number of rows, and a trained head's [V, C] gradient is built once from its blocks
 * rather than summed over row chunks (one [V, C] allocation per chunk, which fragments the wasm
 * heap at 128 k tokens). A frozen head (LoRA) is captured, not an input, so its gradient is not
 * even computed.
 *
 * How many rows a chunk takes (`headChunkRows`): a fixed number, or `auto`, Liger-Kernel's rule
 * for its fused linear cross-entropy (Hsu et al. 2024, "Liger Kernel: Efficient Triton Kernels for
 * LLM Training", §3.3): n = N / ⌈V / C⌉, so one chunk's [n, V] logits hold about as many values as
 * the hidden states [N, C] themselves — flat as the vocabulary grows — with a floor of
 * `AUTO_MIN_CHUNK_VALUES` so that small heads run in one plain pass.
 */
import * as tf from '@tensorflow/tfjs';
import { tokenLogprobs } from '../../losses/logprobs.js';

/** How the LM head is split: rows per chunk (0: all rows in one plain pass) or `auto` (sized to the vocabulary, `headChunkRows`). */
export type HeadChunking = number | 'auto';

/** What the head reads of a model (a `LlamaModel`): its head weight and its vocabulary size. */
export interface LmHead {
  lmHeadWeight(): { weight: tf.Variable; transposed: boolean };
  readonly dims: { readonly vocabSize: number };
}

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

/** Columns [start, start + size) of the head: rows of W [V, C] when `transposed`, else columns of W [C, V]. */
function headBlock(weight: tf.Tensor2D, transposed: boolean, start: number, size: number): tf.Tensor2D {
  const [rows, cols] = weight.shape;
  return (transposed ? tf.slice(weight, [start, 0], [size, cols]) : tf.slice(weight, [0, start], [rows, size])) as tf.Tensor2D; // [b, C] or [C, b]
}

/** The head over row chunks as one customGrad op (see the file comment). */
function chunkedLogprobs(hidden: tf.Tensor2D, labels: tf.Tensor1D, weight: tf.Variable, transposed: boolean, rowsPerChunk: number): tf.Tensor1D {
  const trainHead = weight.trainable;
  const [n, c] = hidden.shape;
  const w = weight as tf.Tensor2D;
  const vocab = transposed ? w.shape[0] : w.shape[1];
  const blockColumns = Math.max(1, Math.min(vocab, Math.floor((rowsPerChunk * vocab) / n))); // b·N ≈ n·V logits
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const h = args[0] as tf.Tensor2D;
    const logps: tf.Tensor1D[] = [];
    const lses: tf.Tensor1D[] = [];
    for (let start = 0; start < n; start += rowsPerChunk) {
      const size = Math.min(rowsPerChunk, n - start);
      const [logp, lse] = tf.tidy(() => {
        const z = headLogits(tf.slice(h, [start, 0], [size, c]) as tf.Tensor2D, w, transposed); // [n, V]
        const lse = tf.logSumExp(z, 1) as tf.Tensor1D; // [n]
        const y = tf.slice(labels, [start], [size]) as tf.Tensor1D; // [n]
        const flatIndex = tf.add(tf.mul(tf.range(0, size, 1, 'int32'), tf.scalar(vocab, 'int32')), y); // [n]: row·V + y (int32)
        const zy = tf.gather(tf.reshape(z, [size * vocab]), flatIndex) as tf.Tensor1D; // [n]
        return [tf.sub(zy, lse) as tf.Tensor1D, lse];
      });
      logps.push(logp);
      lses.push(lse);
    }
    const lse = tf.concat(lses) as tf.Tensor1D; // [N]
    save([h, labels, lse]);
    const value = tf.concat(logps) as tf.Tensor1D; // [N]
    tf.dispose([...logps, ...lses]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [savedH, savedLabels, savedLse] = saved as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
        let dh: tf.Tensor2D = tf.zeros([n, c]); // [N, C]
        const dwBlocks: tf.Tensor2D[] = [];
        for (let start = 0; start < vocab; start += blockColumns) {
          const size = Math.min(blockColumns, vocab - start);
          // tidy per block: its [N, b] intermediates go before the next block's are made
          const [nextDh, dwBlock] = tf.tidy(() => {
            const wb = headBlock(w, transposed, start, size); // [b, C] or [C, b]
            const zb = headLogits(savedH, wb, transposed); // [N, b]
            const pb = tf.exp(tf.sub(zb, tf.expandDims(savedLse, 1))); // [N, b]
            const onehot = tf.cast(tf.equal(tf.expandDims(savedLabels, 1), tf.range(start, start + size, 1, 'int32')), 'float32'); // [N, b]; labels outside the block: a zero row
            const g = tf.mul(tf.sub(onehot, pb), tf.expandDims(dy, 1)) as tf.Tensor2D; // [N, b]
            const next = tf.add(dh, tf.matMul(g, wb, false, !transposed)) as tf.Tensor2D; // [N, C]
            if (!trainHead) return [next, undefined];
            return [next, (transposed ? tf.matMul(g, savedH, true, false) : tf.matMul(savedH, g, true, false)) as tf.Tensor2D]; // [b, C] or [C, b]
          });
          dh.dispose();
          dh = nextDh as tf.Tensor2D;
          if (dwBlock) dwBlocks.push(dwBlock);
        }
        if (!trainHead) return [dh];
        const dw = dwBlocks.length === 1 ? dwBlocks[0] : (tf.concat(dwBlocks, transposed ? 0 : 1) as tf.Tensor2D); // [V, C] or [C, V]
        if (dwBlocks.length > 1) tf.dispose(dwBlocks);
        return [dh, dw];
      },
    };
  });
  return (trainHead ? op(hidden, weight) : op(hidden)) as tf.Tensor1D;
}

/**
 * log p(labels[i] | hidden[i]) for rows `hidden` [N, C] and int32 `labels` [N] → [N], the head
 * computed over chunks of rows as `chunking` says (`headChunkRows`; one chunk: the plain path).
 * Same values and gradients either way, up to float rounding.
 */
export function labelLogprobs(model: LmHead, hidden: tf.Tensor2D, labels: tf.Tensor1D, chunking: HeadChunking): tf.Tensor1D {
  return tf.tidy(() => {
    const { weight, transposed } = model.lmHeadWeight();
    const n = hidden.shape[0];
    if (n === 0) return tf.zeros([0]) as tf.Tensor1D;
    const chunkTokens = headChunkRows(n, model.dims.vocabSize, hidden.shape[1], chunking);
    if (chunkTokens >= n) return plainLogprobs(hidden, labels, weight as tf.Tensor2D, transposed);
    return chunkedLogprobs(hidden, labels, weight, transposed, chunkTokens); // [N]
  });
}
