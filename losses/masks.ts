/**
 * Masks over token positions that the losses take as input.
 *
 * Llama 3 (arXiv 2407.21783 §4.1.4) masks special formatting tokens — the header tokens
 * `<|start_header_id|>`, `<|end_header_id|>` and the termination token `<|eot_id|>` — out of both
 * the chosen and rejected log-probs in DPO: these tokens appear in both responses, so DPO's
 * contrastive loss pushes their likelihood up and down at once; the paper reports tail repetition
 * and abruptly generated termination tokens when they are left in.
 */
import * as tf from '@tensorflow/tfjs';

/**
 * `responseMask` with every position whose id is in `formattingTokenIds` set to 0.
 *
 * @param ids [B, T] int32. Pass the **labels** (the tokens whose log-probs the mask gates, aligned
 *   as in `tokenLogprobs`), not the inputs, or the mask lands one position early.
 * @param responseMask [B, T] float32, 1 on response tokens.
 * @param formattingTokenIds the ids to drop (e.g. the three Llama 3 tokens above).
 * @returns [B, T] float32.
 */
export function formattingTokenMask(ids: tf.Tensor2D, responseMask: tf.Tensor2D, formattingTokenIds: readonly number[]): tf.Tensor2D {
  if (ids.shape[0] !== responseMask.shape[0] || ids.shape[1] !== responseMask.shape[1]) {
    throw new Error(`losses/masks.ts: responseMask shape [${responseMask.shape}] does not match ids [${ids.shape}]`);
  }
  if (ids.dtype !== 'int32') throw new Error(`losses/masks.ts: ids dtype is ${ids.dtype}; expected int32`);
  return tf.tidy(() => {
    const mask = tf.cast(responseMask, 'float32') as tf.Tensor2D; // [B, T]
    if (formattingTokenIds.length === 0) return tf.clone(mask);
    const listed = tf.tensor1d([...formattingTokenIds], 'int32'); // [K]
    const isFormatting = tf.any(tf.equal(tf.expandDims(ids, -1), listed), -1); // [B, T, K] -> [B, T]
    return tf.where(isFormatting, tf.zerosLike(mask), mask) as tf.Tensor2D; // [B, T]
  });
}
