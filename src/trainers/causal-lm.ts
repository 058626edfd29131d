/**
 * Next-token cross-entropy on a collated batch, shared by pretraining and SFT: the loss is the
 * mean over target tokens only (`TokenBatch.targets`), so prompt tokens, padding and the first
 * token of each packed document contribute nothing.
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from '../model/llama.js';
import { FullAttention } from '../model/attention.js';
import { padRows, type TokenBatch } from '../../data/collate.js';
import { tokenLogprobs } from '../../losses/logprobs.js';
import { sftLoss } from '../../losses/sft.js';
import type { MicroBatchLoss } from '../train/step-engine.js';

/** Per-token log-probs of each position's next token: [B, T−1]. */
export function batchTokenLogprobs(model: LlamaModel, batch: TokenBatch): tf.Tensor2D {
  return tf.tidy(() => {
    const { batchSize: b, seqLen: t } = batch;
    const ctx = new FullAttention({ batchSize: b, seqLen: t, segmentIds: batch.segmentIds });
    const hidden = model.forward(tf.tensor2d(batch.inputIds, [b, t], 'int32'), ctx); // [B, T, C]
    const predicting = tf.slice(hidden, [0, 0, 0], [b, t - 1, hidden.shape[2]]); // [B, T−1, C]
    const logits = model.logits(predicting); // [B, T−1, V]
    return tokenLogprobs(logits, tf.tensor2d(batch.labels, [b, t - 1], 'int32')); // [B, T−1]
  });
}

/** Mean next-token cross-entropy over the batch's target tokens; weight = number of targets. */
export function causalLmLoss(model: LlamaModel, batch: TokenBatch): MicroBatchLoss {
  const logps = batchTokenLogprobs(model, batch);
  const mask = tf.tensor2d(batch.targets, [batch.batchSize, batch.seqLen - 1]); // [B, T−1]
  const { loss } = sftLoss(logps, mask);
  return { loss, weight: batch.numTargets };
}

/** Mean loss (and perplexity) over evaluation batches, without gradients. */
export function evaluateCausalLm(model: LlamaModel, batches: TokenBatch[]): { loss: number; perplexity: number; num_tokens: number } {
  let total = 0;
  let count = 0;
  for (const batch of batches) {
    if (batch.numTargets === 0) continue;
    const value = tf.tidy(() => causalLmLoss(model, batch).loss.dataSync()[0]);
    total += value * batch.numTargets;
    count += batch.numTargets;
  }
  const loss = count > 0 ? total / count : NaN;
  return { loss, perplexity: Math.exp(loss), num_tokens: count };
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
    const logpsTensor = batchTokenLogprobs(model, batch); // [B, T−1]
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
