/**
 * Token log-probs of a causal LM over collated batches, forward only: `batchTokenLogprobs` (the
 * building block of the causal-LM and DPO objectives, `src/tasks/`) and `responseLogprobs`
 * (log p(response | prompt) of many rows, batched: `tfalign logprobs`, DPO reference log-probs,
 * difficulty scoring).
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from '../model/llama.js';
import { FullAttention } from '../model/attention.js';
import { padRows, type TokenBatch } from '../../data/collate.js';
import { labelLogprobs } from '../model/lm-head.js';

/**
 * Per-token log-probs of each position's next token: [B, T−1]. With `positions: 'targets'` the LM
 * head runs only where `batch.targets` is 1 (the loss's tokens; prompt and padding positions get
 * no logits and read 0). The head goes `model.headChunkTokens` rows at a time (`lm-head.ts`).
 */
export function batchTokenLogprobs(model: LlamaModel, batch: TokenBatch, opts: { positions?: 'all' | 'targets' } = {}): tf.Tensor2D {
  return tf.tidy(() => {
    const { batchSize: b, seqLen: t } = batch;
    const ctx = new FullAttention({ batchSize: b, seqLen: t, segmentIds: batch.segmentIds });
    const hidden = model.forward(tf.tensor2d(batch.inputIds, [b, t], 'int32'), ctx); // [B, T, C]
    const c = hidden.shape[2];
    const predicting = tf.slice(hidden, [0, 0, 0], [b, t - 1, c]); // [B, T−1, C]
    if (opts.positions !== 'targets') {
      const rows = tf.reshape(predicting, [b * (t - 1), c]) as tf.Tensor2D; // [B·(T−1), C]
      const logps = labelLogprobs(model, rows, tf.tensor1d(batch.labels, 'int32'), model.headChunkTokens); // [B·(T−1)]
      return tf.reshape(logps, [b, t - 1]) as tf.Tensor2D; // [B, T−1]
    }
    // Only the target positions: gather their rows, score them, put them back (0 elsewhere).
    const slots = b * (t - 1);
    const picked: number[] = [];
    for (let i = 0; i < slots; i++) if (batch.targets[i] !== 0) picked.push(i);
    // No target (a fully masked micro-batch): zeros that still depend on the weights, so a gradient
    // tape sees the loss connected to them (a zero gradient, as the plain path gives).
    if (picked.length === 0) return tf.mul(tf.sum(predicting, -1), 0) as tf.Tensor2D; // [B, T−1]
    const rows = tf.gather(tf.reshape(predicting, [slots, c]), tf.tensor1d(picked, 'int32')) as tf.Tensor2D; // [M, C]
    const labels = tf.tensor1d(Int32Array.from(picked, (i) => batch.labels[i]), 'int32'); // [M]
    const logps = labelLogprobs(model, rows, labels, model.headChunkTokens); // [M]
    const back = new Int32Array(slots).fill(picked.length); // slot → its row in logps, or the trailing 0
    picked.forEach((slot, j) => (back[slot] = j));
    const withZero = tf.concat([logps, tf.zeros([1])]); // [M + 1]
    return tf.reshape(tf.gather(withZero, tf.tensor1d(back, 'int32')), [b, t - 1]) as tf.Tensor2D; // [B, T−1]
  });
}

export interface PromptResponseIds {
  promptIds: number[];
  responseIds: number[];
}

/**
 * Log-probability of every response token given everything before it, for many rows, batched
 * (right padding never changes a row's values: attention and positions ignore it). Returns per
 * row the token log-probs in order; their sum is log p(response | prompt).
 */
export function responseLogprobs(model: LlamaModel, rows: PromptResponseIds[], batchSize: number, padId: number): Float32Array[] {
  // Batch rows of similar length together (less padding), then restore input order.
  const order = rows.map((r, i) => ({ i, len: r.promptIds.length + r.responseIds.length })).sort((a, b) => a.len - b.len).map((x) => x.i);
  const out = new Array<Float32Array>(rows.length);
  for (let start = 0; start < order.length; start += batchSize) {
    const indices = order.slice(start, start + batchSize);
    const chunk = indices.map((i) => rows[i]);
    const batch = padRows(
      chunk.map((r) => ({ ids: [...r.promptIds, ...r.responseIds], targetMask: [...r.promptIds.map(() => 0), ...r.responseIds.map(() => 1)] })),
      padId,
    );
    // Read outside tf.tidy: a tidy walks every element of a typed array it returns.
    const logpsTensor = batchTokenLogprobs(model, batch, { positions: 'targets' }); // [B, T−1], response positions only
    const logps = logpsTensor.dataSync() as Float32Array;
    logpsTensor.dispose();
    const t = batch.seqLen;
    chunk.forEach((r, j) => {
      // response token k sits at position P+k and is predicted by position P+k−1
      const from = j * (t - 1) + r.promptIds.length - 1;
      out[indices[j]] = logps.slice(from, from + r.responseIds.length);
    });
  }
  return out;
}
