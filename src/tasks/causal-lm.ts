/**
 * The causal-LM objective (pretraining, SFT) as a task (`kind: 'causal-lm'`): next-token
 * cross-entropy on a collated batch, the mean over target tokens only (`TokenBatch.targets`), so
 * prompt tokens, padding and the first token of each packed document contribute nothing.
 * Workers split a micro-batch by rows (`splitTokenBatch`).
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from '../model/llama.js';
import { selectRows, type TokenBatch } from '../../data/collate.js';
import { sftLoss } from '../../losses/sft.js';
import type { MicroBatchLoss } from '../train/step-engine.js';
import { evenRowRanges, type TaskDefinition } from '../train/task.js';
import { batchTokenLogprobs } from '../inference/token-logprobs.js';

export const CAUSAL_LM_TASK_KIND = 'causal-lm';

/** Mean next-token cross-entropy over the batch's target tokens; weight = number of targets. */
export function causalLmLoss(model: LlamaModel, batch: TokenBatch): MicroBatchLoss {
  const logps = batchTokenLogprobs(model, batch, { positions: 'targets' }); // [B, T−1], 0 off the targets
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

/** A `TokenBatch` cut into contiguous row ranges (each part keeps the sequence length). */
export function splitTokenBatch(batch: TokenBatch, numParts: number): TokenBatch[] {
  return evenRowRanges(batch.batchSize, numParts).map(([start, end]) =>
    selectRows(
      batch,
      Array.from({ length: end - start }, (_, i) => start + i),
    ),
  );
}

/** Next-token cross-entropy on `TokenBatch`es (pretraining, SFT): `causalLmLoss`, weight = target tokens. */
export const causalLmTask: TaskDefinition<TokenBatch> = {
  kind: CAUSAL_LM_TASK_KIND,
  buildLoss: ({ model }) => (batch) => causalLmLoss(model, batch),
  splitBatch: splitTokenBatch,
};
