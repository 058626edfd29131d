/**
 * The reward-model objective, defined once (`kind: 'reward-model'`; the step engine and every
 * data-parallel replica build it from the plain-data options `{margin, centeringCoefficient,
 * nllCoefficient}`).
 *
 * Batch layout: for a micro-batch of P preference rows with R_i responses each (2, or 3 when the
 * row has an edit), all Σ R_i prompt+response sequences are stacked, row by row and best first,
 * into one right-padded [N, T] batch; each sequence's reward is read at its last real token (its
 * end-of-turn token), and the rewards are gathered into a [P, R] matrix whose columns are
 * (edited, chosen, rejected) when any row has an edit (R = 3, a missing edit masked out of the
 * `validMask`) and (chosen, rejected) otherwise (R = 2).
 *
 * Loss: with an edit in the micro-batch, `rankingLoss` over every ordered pair of the ranking (a
 * row with an edit gives 3 pairs, one without gives 1); otherwise `bradleyTerryLoss`, with Llama 2's
 * per-strength margin when `margin` is on. Either way the objective is the mean over the global
 * batch's ordered pairs (unit `pairs`): the loss returns the sum over its micro-batch's pairs and
 * the step engine divides by the global count. (`rankingLoss` averages per row, as Ouyang et al.
 * 2022 do; we multiply each row's mean by its number of pairs to get the sum over pairs.)
 *
 * Reward heads (`LlamaModel.rewards`): a `score` head reads each sequence at its last real token;
 * a `logprob` head (SimPO's reward, Meng et al. 2024) reads beta · the mean log-prob of the
 * response's tokens under the LM head, and may add an NLL term on each row's best response
 * (edited, else chosen), α · Σ_t −log p(y_t), over unit `best_tokens` — CPO's NLL regulariser (Xu et
 * al. 2024; TRL's `cpo_alpha`), so the model keeps (and sharpens) the likelihood its reward is read from.
 *
 * Metrics, on train (logged every `logEvery` steps) and on the held-out split: `accuracy`, the
 * fraction of rows whose chosen reward beats the rejected one, and `margin`, the mean r_c − r_r
 * (the Llama 3 comparison; edits do not enter them) — sums over unit `rows`, so both are exact
 * means over the global batch's rows, with accumulation, workers and in evaluation alike.
 *
 * Splitting a micro-batch across workers cuts it by preference rows, never inside a row: the
 * 2–3 responses of a row are compared with each other, so they stay in one part. A part keeps the
 * micro-batch's reward-matrix width R (so the same loss — ranking or Bradley–Terry — runs on every
 * part) and its padded length; its pair and row counts, loss sum and metric sums are its own,
 * and they add up to the whole's.
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from '../model/llama.js';
import { FullAttention } from '../model/attention.js';
import type { Strength } from '../../data/rows.js';
import type { TokenizedPreference } from '../../data/tokenize.js';
import { padRows, selectRows, type TokenBatch } from '../../data/collate.js';
import { bradleyTerryLoss, rankingLoss, strengthMargins } from '../../losses/reward.js';
import { evaluateObjective, type MetricSum, type MicroBatchObjective, type UnitCounts } from '../train/objective.js';
import { evenRowRanges, type TaskDefinition } from '../train/task.js';
import { lastTokenIndex } from '../inference/reward-scoring.js';

export const REWARD_MODEL_TASK_KIND = 'reward-model';

/** Number of ordered pairs a ranking of `numResponses` responses gives: C(R, 2). */
export function numPairsOf(numResponses: number): number {
  return (numResponses * (numResponses - 1)) / 2;
}

/** A micro-batch of preference rows, collated (see the batch layout at the top of this file). */
export interface PreferenceBatch {
  /** Every response of every row, row by row and best first, after its prompt: [N, T], right-padded. */
  sequences: TokenBatch;
  /** [N] index of each sequence's last real token, where its reward is read. */
  lastIndex: Int32Array;
  /** [N] index of each sequence's first response token (its prompt's length): a `logprob` head reads from there. */
  responseStart: Int32Array;
  /** [P] the sequence of each row's best response (edited when it has one, else chosen): the NLL term's. */
  bestSequence: Int32Array;
  /** Σ over rows of the best response's token count (its end-of-turn token included): the NLL term's units. */
  numBestTokens: number;
  /** P, the preference rows. */
  numRows: number;
  /** R, the reward matrix's columns: 3 (edited, chosen, rejected) when a row has an edit, else 2 (chosen, rejected). */
  numRanks: number;
  /** [P·R] row-major: the sequence holding rank r of row p (a missing edit points at the row's chosen, masked). */
  rankSequence: Int32Array;
  /** [P·R] 1 where the response exists. */
  validMask: Float32Array;
  /** [P] ordered pairs per row: 3 with an edit, 1 without. */
  pairsPerRow: Float32Array;
  /** [P] strength of each row's chosen/rejected pair (for margins). */
  strengths: Strength[];
  /** Σ pairsPerRow: the loss's units. */
  numPairs: number;
}

/** The batch's units: `pairs` (the loss's ordered pairs) and `rows` (the metrics' preference rows). */
export function rewardModelUnits(batch: PreferenceBatch): UnitCounts {
  return { pairs: batch.numPairs, rows: batch.numRows, best_tokens: batch.numBestTokens };
}

/** Stacks the responses of `rows` into one batch (layout at the top of this file). */
export function collatePreferences(rows: readonly TokenizedPreference[], padId: number): PreferenceBatch {
  if (rows.length === 0) throw new Error('rm train: a micro-batch needs at least one preference row');
  const numRanks = rows.some((r) => r.responses.length === 3) ? 3 : 2;
  const sequences: number[][] = [];
  const rankSequence = new Int32Array(rows.length * numRanks);
  const validMask = new Float32Array(rows.length * numRanks);
  const pairsPerRow = new Float32Array(rows.length);
  const responseStart: number[] = [];
  const bestSequence = new Int32Array(rows.length);
  let numBestTokens = 0;
  rows.forEach((row, p) => {
    const first = sequences.length;
    for (const response of row.responses) {
      sequences.push([...row.promptIds, ...response]);
      responseStart.push(row.promptIds.length);
    }
    bestSequence[p] = first;
    numBestTokens += row.responses[0]!.length;
    const numMissing = numRanks - row.responses.length; // a row without an edit, in a batch with one
    for (let r = 0; r < numRanks; r++) {
      const present = r >= numMissing;
      rankSequence[p * numRanks + r] = present ? first + r - numMissing : first; // missing → chosen (masked)
      validMask[p * numRanks + r] = present ? 1 : 0;
    }
    pairsPerRow[p] = numPairsOf(row.responses.length);
  });
  return {
    sequences: padRows(sequences.map((ids) => ({ ids, targetMask: ids.map(() => 0) })), padId),
    lastIndex: lastTokenIndex(sequences),
    responseStart: Int32Array.from(responseStart),
    bestSequence,
    numBestTokens,
    numRows: rows.length,
    numRanks,
    rankSequence,
    validMask,
    pairsPerRow,
    strengths: rows.map((r) => r.strength),
    numPairs: pairsPerRow.reduce((a, b) => a + b, 0),
  };
}

/**
 * The reward of every response of the batch: [P, R], columns best first (see `PreferenceBatch`),
 * and, for a `logprob` head, Σ of −log p over the tokens of each row's best response (the NLL
 * term's numerator; 0 for a `score` head, which has no LM head).
 */
export function rewardMatrix(model: LlamaModel, batch: PreferenceBatch): { rewards: tf.Tensor2D; bestNllSum: tf.Scalar } {
  return tf.tidy(() => {
    const { sequences: s } = batch;
    const ctx = new FullAttention({ batchSize: s.batchSize, seqLen: s.seqLen, segmentIds: s.segmentIds });
    const hidden = model.forward(tf.tensor2d(s.inputIds, [s.batchSize, s.seqLen], 'int32'), ctx); // [N, T, C]
    const at = { lastIndex: batch.lastIndex, responseStart: batch.responseStart, inputIds: s.inputIds };
    let rewards: tf.Tensor1D; // [N]
    let bestNllSum: tf.Scalar = tf.scalar(0);
    if (model.dims.rewardHead === 'logprob') {
      // one LM-head pass gives both: r = beta · mean log p (as `LlamaModel.rewards`) and the best responses' NLL
      const logprob = model.logprobRewards(hidden, at); // [N] each: rewards, log p(response)
      rewards = logprob.rewards;
      bestNllSum = tf.neg(tf.sum(tf.gather(logprob.sums, tf.tensor1d(batch.bestSequence, 'int32')))) as tf.Scalar;
    } else {
      rewards = model.rewards(hidden, at);
    }
    const ranked = tf.gather(rewards, tf.tensor1d(batch.rankSequence, 'int32')); // [P·R]
    return { rewards: tf.reshape(ranked, [batch.numRows, batch.numRanks]) as tf.Tensor2D, bestNllSum }; // [P, R]
  });
}

/** Chosen-vs-rejected comparisons of a [P, R] reward matrix read to the host. */
function chosenRejectedCounts(values: ArrayLike<number>, numRows: number, numRanks: number): { numCorrect: number; sumGap: number } {
  let numCorrect = 0;
  let sumGap = 0;
  for (let p = 0; p < numRows; p++) {
    const gap = values[p * numRanks + numRanks - 2] - values[p * numRanks + numRanks - 1]; // r_c − r_r
    if (gap > 0) numCorrect++;
    sumGap += gap;
  }
  return { numCorrect, sumGap };
}

export interface RewardLossConfig {
  /** Llama 2's per-strength margin (Bradley–Terry only). */
  margin: boolean;
  /** c in c · (r_c + r_r)² per pair. */
  centeringCoefficient: number;
  /** α of the NLL term on each row's best response, per token (a `logprob` head only; 0 or omitted: none). */
  nllCoefficient?: number;
}

/**
 * The micro-batch loss: the sum over its ordered pairs of −log σ(r_better − r_worse [− m]), plus
 * centering (`sums.pairs`); metrics `accuracy` (rows whose chosen reward beats the rejected) and
 * `margin` (Σ r_c − r_r) as sums over `rows`.
 */
export function rewardModelLoss(model: LlamaModel, batch: PreferenceBatch, opts: RewardLossConfig): MicroBatchObjective {
  if (batch.numRanks === 3 && opts.margin) throw new Error('rm train: margin is defined for chosen/rejected pairs only; this batch has an edited response');
  const centering = { centeringCoefficient: opts.centeringCoefficient };
  const nllCoefficient = opts.nllCoefficient ?? 0;
  if (nllCoefficient > 0 && model.dims.rewardHead !== 'logprob') throw new Error('rm train: nllCoefficient needs a logprob reward head (a score head has no LM head)');
  let counts = { numCorrect: 0, sumGap: 0 };
  let nllSum = 0;
  let nllTerm: tf.Scalar | undefined;
  // tidy keeps only the loss; the gradient tape still records every op inside it
  const loss = tf.tidy(() => {
    const { rewards, bestNllSum } = rewardMatrix(model, batch); // [P, R], []
    counts = chosenRejectedCounts(rewards.dataSync(), batch.numRows, batch.numRanks);
    if (model.dims.rewardHead === 'logprob') {
      nllSum = bestNllSum.dataSync()[0]!;
      if (nllCoefficient > 0) nllTerm = tf.keep(tf.mul(bestNllSum, nllCoefficient) as tf.Scalar);
    }
    if (batch.numRanks === 3) {
      const ranking = rankingLoss(rewards, tf.tensor2d(batch.validMask, [batch.numRows, 3]), centering);
      // per-row means × pairs per row = the sum over pairs
      return tf.sum(tf.mul(ranking.losses, tf.tensor1d(batch.pairsPerRow))) as tf.Scalar;
    }
    const chosenRewards = tf.reshape(tf.slice(rewards, [0, 0], [batch.numRows, 1]), [batch.numRows]) as tf.Tensor1D; // [P]
    const rejectedRewards = tf.reshape(tf.slice(rewards, [0, 1], [batch.numRows, 1]), [batch.numRows]) as tf.Tensor1D; // [P]
    const margins = opts.margin ? strengthMargins(batch.strengths) : undefined; // [P]
    return tf.sum(bradleyTerryLoss({ chosenRewards, rejectedRewards, margins }, centering).losses) as tf.Scalar;
  });
  const metrics: Record<string, MetricSum> = { accuracy: { sum: counts.numCorrect, unit: 'rows' }, margin: { sum: counts.sumGap, unit: 'rows' } };
  if (model.dims.rewardHead === 'logprob') metrics.nll_loss = { sum: nllSum, unit: 'best_tokens' };
  return { sums: nllTerm !== undefined ? { pairs: loss, best_tokens: nllTerm } : { pairs: loss }, metrics };
}

/** Held-out metrics over every batch as one: mean pair loss, and `accuracy` and `margin` over rows, without gradients. */
export function evaluateRewardModel(
  model: LlamaModel,
  batches: readonly PreferenceBatch[],
  opts: RewardLossConfig,
): { loss: number; accuracy: number; margin: number; num_rows: number; num_pairs: number } {
  const { loss, metrics, units } = evaluateObjective({ loss: (batch) => rewardModelLoss(model, batch, opts), unitsOf: rewardModelUnits }, batches);
  const numPairs = units.pairs ?? 0;
  return { loss: numPairs > 0 ? loss : NaN, accuracy: metrics.accuracy ?? NaN, margin: metrics.margin ?? NaN, num_rows: units.rows ?? 0, num_pairs: numPairs };
}

/** The task options of a reward-model loss (plain data, sent to every worker). */
export function rewardTaskOptions(config: RewardLossConfig): Record<string, unknown> {
  return { margin: config.margin, centeringCoefficient: config.centeringCoefficient, nllCoefficient: config.nllCoefficient ?? 0 };
}

/** The loss config back from task options, checked (a worker receives them as untyped data). */
export function rewardLossConfigOf(options: Record<string, unknown>): RewardLossConfig {
  const { margin, centeringCoefficient, nllCoefficient } = options;
  if (typeof margin !== 'boolean') throw new Error(`reward-model task: options.margin must be a boolean, got ${JSON.stringify(margin)}`);
  if (typeof centeringCoefficient !== 'number' || !(centeringCoefficient >= 0)) {
    throw new Error(`reward-model task: options.centeringCoefficient must be a number ≥ 0, got ${JSON.stringify(centeringCoefficient)}`);
  }
  if (nllCoefficient !== undefined && (typeof nllCoefficient !== 'number' || !(nllCoefficient >= 0))) {
    throw new Error(`reward-model task: options.nllCoefficient must be a number ≥ 0, got ${JSON.stringify(nllCoefficient)}`);
  }
  return { margin, centeringCoefficient, nllCoefficient: (nllCoefficient as number | undefined) ?? 0 };
}

/** Index of the first sequence of preference row `p` (the lowest sequence its ranks point at). */
function firstSequenceOf(batch: PreferenceBatch, p: number): number {
  const ranks = batch.rankSequence.subarray(p * batch.numRanks, (p + 1) * batch.numRanks);
  return Math.min(...ranks);
}

/**
 * Preference rows `[start, end)` of a collated micro-batch as a batch of their own: their
 * sequences (contiguous, since rows are stacked row by row), rank indices shifted to the new
 * sequence numbering.
 */
export function selectPreferenceRows(batch: PreferenceBatch, start: number, end: number): PreferenceBatch {
  if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start < end && end <= batch.numRows)) {
    throw new Error(`reward-model task: row range [${start}, ${end}) is not inside the batch's ${batch.numRows} rows`);
  }
  const r = batch.numRanks;
  const seqStart = firstSequenceOf(batch, start);
  const seqEnd = end < batch.numRows ? firstSequenceOf(batch, end) : batch.sequences.batchSize;
  const pairsPerRow = batch.pairsPerRow.slice(start, end);
  const bestSequence = batch.bestSequence.slice(start, end).map((s) => s - seqStart);
  let numBestTokens = 0;
  for (const s of bestSequence) numBestTokens += batch.lastIndex[seqStart + s]! - batch.responseStart[seqStart + s]! + 1;
  return {
    sequences: selectRows(
      batch.sequences,
      Array.from({ length: seqEnd - seqStart }, (_, i) => seqStart + i),
    ),
    lastIndex: batch.lastIndex.slice(seqStart, seqEnd),
    responseStart: batch.responseStart.slice(seqStart, seqEnd),
    bestSequence,
    numBestTokens,
    numRows: end - start,
    numRanks: r,
    rankSequence: batch.rankSequence.slice(start * r, end * r).map((s) => s - seqStart),
    validMask: batch.validMask.slice(start * r, end * r),
    pairsPerRow,
    strengths: batch.strengths.slice(start, end),
    numPairs: pairsPerRow.reduce((a, b) => a + b, 0),
  };
}

/** A micro-batch cut into at most `numParts` contiguous ranges of preference rows (sizes differ by at most one). */
export function splitPreferenceBatch(batch: PreferenceBatch, numParts: number): PreferenceBatch[] {
  return evenRowRanges(batch.numRows, numParts).map(([start, end]) => selectPreferenceRows(batch, start, end));
}

/** Bradley–Terry / ranking loss on `PreferenceBatch`es, over `pairs`; metrics over `rows`. */
export const rewardModelTask: TaskDefinition<PreferenceBatch> = {
  kind: REWARD_MODEL_TASK_KIND,
  buildLoss: ({ model, options }) => {
    const config = rewardLossConfigOf(options);
    return (batch) => rewardModelLoss(model, batch, config);
  },
  unitsOf: rewardModelUnits,
  splitBatch: splitPreferenceBatch,
};
