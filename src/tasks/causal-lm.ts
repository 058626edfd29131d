/**
 * The causal-LM objective (pretraining, SFT) as a task (`kind: 'causal-lm'`): next-token
 * cross-entropy on a collated batch over target tokens only (`TokenBatch.targets`), so prompt
 * tokens, padding and the first token of each packed document contribute nothing.
 *
 *   L = − Σ_t m_t log πθ(y_t | y_<t) / Σ_t m_t      (one unit: `tokens`, the targets)
 *
 * The loss returns the numerator over its micro-batch (`sums.tokens`); the step engine divides
 * by the global batch's target count. Workers split a micro-batch by rows (`splitTokenBatch`).
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from '../model/llama.js';
import { selectRows, type TokenBatch } from '../../data/collate.js';
import { tokenNllSum } from '../../losses/logprobs.js';
import { evaluateObjective, type MicroBatchObjective, type UnitCounts } from '../train/objective.js';
import { evenRowRanges, type TaskDefinition } from '../train/task.js';
import { batchTokenLogprobs } from '../inference/token-logprobs.js';

export const CAUSAL_LM_TASK_KIND = 'causal-lm';

/** The batch's units: `tokens`, its target tokens. */
export function causalLmUnits(batch: TokenBatch): UnitCounts {
  return { tokens: batch.numTargets };
}

/** Next-token cross-entropy summed over the batch's target tokens (`sums.tokens`). */
export function causalLmLoss(model: LlamaModel, batch: TokenBatch): MicroBatchObjective {
  const tokens = tf.tidy(() => {
    const logps = batchTokenLogprobs(model, batch, { positions: 'targets' }); // [B, T−1], 0 off the targets
    const mask = tf.tensor2d(batch.targets, [batch.batchSize, batch.seqLen - 1]); // [B, T−1]
    return tokenNllSum(logps, mask);
  });
  return { sums: { tokens } };
}

/** Mean loss (and perplexity) over every target token of the evaluation batches, without gradients. */
export function evaluateCausalLm(model: LlamaModel, batches: TokenBatch[]): { loss: number; perplexity: number; num_tokens: number } {
  const { loss: value, units } = evaluateObjective({ loss: (batch) => causalLmLoss(model, batch), unitsOf: causalLmUnits }, batches);
  const count = units.tokens ?? 0;
  const loss = count > 0 ? value : NaN;
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

/** Next-token cross-entropy on `TokenBatch`es (pretraining, SFT): `causalLmLoss` over `tokens`. */
export const causalLmTask: TaskDefinition<TokenBatch> = {
  kind: CAUSAL_LM_TASK_KIND,
  buildLoss: ({ model }) => (batch) => causalLmLoss(model, batch),
  unitsOf: causalLmUnits,
  splitBatch: splitTokenBatch,
};
