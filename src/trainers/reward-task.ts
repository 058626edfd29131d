/**
 * The reward-model loss as a data-parallel task (`kind: 'reward-model'`, see
 * `src/parallel/tasks.ts`): every replica builds `rewardModelLoss` over its own model from the
 * plain-data options `{margin, centeringCoefficient}`.
 *
 * Splitting a micro-batch across workers cuts it by preference rows, never inside a row: the
 * 2–3 responses of a row are compared with each other, so they stay in one part. A part keeps the
 * micro-batch's reward-matrix width R (so the same loss — ranking or Bradley–Terry — runs on every
 * part) and its padded length, and records the whole micro-batch's rows and pairs (`whole`):
 * the loss is a mean over pairs weighted by pairs, so the parts' losses add up to the whole's
 * exactly, and the row metrics (accuracy, margin) are rescaled so that they do too.
 */
import { selectRows } from '../../data/collate.js';
import { evenRowRanges, type TaskDefinition } from '../parallel/tasks.js';
import { rewardModelLoss, type PreferenceBatch, type RewardLossConfig } from './reward.js';

export const REWARD_MODEL_TASK_KIND = 'reward-model';

/** The task options of a reward-model loss (plain data, sent to every worker). */
export function rewardTaskOptions(config: RewardLossConfig): Record<string, unknown> {
  return { margin: config.margin, centeringCoefficient: config.centeringCoefficient };
}

/** The loss config back from task options, checked (a worker receives them as untyped data). */
export function rewardLossConfigOf(options: Record<string, unknown>): RewardLossConfig {
  const { margin, centeringCoefficient } = options;
  if (typeof margin !== 'boolean') throw new Error(`reward-task: options.margin must be a boolean, got ${JSON.stringify(margin)}`);
  if (typeof centeringCoefficient !== 'number' || !(centeringCoefficient >= 0)) {
    throw new Error(`reward-task: options.centeringCoefficient must be a number ≥ 0, got ${JSON.stringify(centeringCoefficient)}`);
  }
  return { margin, centeringCoefficient };
}

/** Index of the first sequence of preference row `p` (the lowest sequence its ranks point at). */
function firstSequenceOf(batch: PreferenceBatch, p: number): number {
  const ranks = batch.rankSequence.subarray(p * batch.numRanks, (p + 1) * batch.numRanks);
  return Math.min(...ranks);
}

/**
 * Preference rows `[start, end)` of a collated micro-batch as a batch of their own: their
 * sequences (contiguous, since rows are stacked row by row), rank indices shifted to the new
 * sequence numbering, and `whole` naming the micro-batch they came from.
 */
export function selectPreferenceRows(batch: PreferenceBatch, start: number, end: number): PreferenceBatch {
  if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start < end && end <= batch.numRows)) {
    throw new Error(`reward-task: row range [${start}, ${end}) is not inside the batch's ${batch.numRows} rows`);
  }
  const r = batch.numRanks;
  const seqStart = firstSequenceOf(batch, start);
  const seqEnd = end < batch.numRows ? firstSequenceOf(batch, end) : batch.sequences.batchSize;
  const pairsPerRow = batch.pairsPerRow.slice(start, end);
  return {
    sequences: selectRows(
      batch.sequences,
      Array.from({ length: seqEnd - seqStart }, (_, i) => seqStart + i),
    ),
    lastIndex: batch.lastIndex.slice(seqStart, seqEnd),
    numRows: end - start,
    numRanks: r,
    rankSequence: batch.rankSequence.slice(start * r, end * r).map((s) => s - seqStart),
    validMask: batch.validMask.slice(start * r, end * r),
    pairsPerRow,
    strengths: batch.strengths.slice(start, end),
    numPairs: pairsPerRow.reduce((a, b) => a + b, 0),
    whole: batch.whole ?? { numRows: batch.numRows, numPairs: batch.numPairs },
  };
}

/** A micro-batch cut into at most `numParts` contiguous ranges of preference rows (sizes differ by at most one). */
export function splitPreferenceBatch(batch: PreferenceBatch, numParts: number): PreferenceBatch[] {
  return evenRowRanges(batch.numRows, numParts).map(([start, end]) => selectPreferenceRows(batch, start, end));
}

/** Bradley–Terry / ranking loss on `PreferenceBatch`es; weight = number of ordered pairs. */
export const rewardModelTask: TaskDefinition<PreferenceBatch> = {
  kind: REWARD_MODEL_TASK_KIND,
  buildLoss: ({ model, options }) => {
    const config = rewardLossConfigOf(options);
    return (batch) => rewardModelLoss(model, batch, config);
  },
  splitBatch: splitPreferenceBatch,
};
