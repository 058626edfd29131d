/**
 * The DPO (+ NLL) objective, defined once (`kind: 'dpo'`): the batch layout (the first half of a
 * micro-batch's rows are the chosen sequences, the second half the rejected ones in the same pair
 * order, all right-padded to one length), the loss and TRL's metrics. The step engine and every
 * data-parallel replica build `dpoLoss` over their own policy from plain-data options
 * `{lossType, beta, labelSmoothing, nllCoefficient, formattingTokenIds}`, looking the loss up in
 * `DPO_LOSSES` by name (a loss object cannot cross threads).
 *
 * Splitting a micro-batch of P pairs cuts it by pairs: part k takes pairs [a, b), that is chosen
 * rows a..b−1 and rejected rows P+a..P+b−1, laid out again chosen-then-rejected, with their
 * reference log-probs — pair i's two sequences always stay together, as the loss compares them.
 * The objective has two units: the preference term is a mean over `pairs`, the NLL term a mean
 * over `chosen_tokens` (`dpoUnits`). The loss returns each term's SUM over its micro-batch and the
 * step engine divides by the global batch's counts, so a split step computes exactly the unsplit
 * objective without the loss knowing about the split.
 *
 * The reference never runs in a worker: precomputed values travel in the batch, and in
 * `referenceMode: 'resident'` the frozen reference stays in the parent thread, whose `batchesAt`
 * computes its log-probs before the batch is split.
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from '../model/llama.js';
import { padRows, selectRows, type TokenBatch } from '../../data/collate.js';
import { DPO_LOSSES, type PreferenceLoss } from '../../losses/dpo.js';
import { sequenceLogps, tokenNllSum } from '../../losses/logprobs.js';
import { formattingTokenMask } from '../../losses/masks.js';
import { evaluateObjective, type MetricSum, type MicroBatchObjective, type UnitCounts } from '../train/objective.js';
import { evenRowRanges, type TaskDefinition } from '../train/task.js';
import { batchTokenLogprobs } from '../inference/token-logprobs.js';

export const DPO_TASK_KIND = 'dpo';

/** One preference pair as token ids: the sequences are prompt+chosen and prompt+rejected. */
export interface PreferencePairIds {
  promptIds: number[];
  chosenIds: number[];
  rejectedIds: number[];
}

/** One micro-batch of P pairs. */
export interface DpoBatch {
  /** 2P rows: rows 0..P−1 are prompt+chosen, rows P..2P−1 prompt+rejected (same pair order), right-padded; targets on response tokens. */
  tokens: TokenBatch;
  numPairs: number;
  /** [P] log π_ref(y_w|x), masked like the policy's. */
  refChosenLogps: Float32Array;
  /** [P] log π_ref(y_l|x). */
  refRejectedLogps: Float32Array;
}

/** Target tokens of the chosen rows (0..P−1) of a batch: the NLL term's units. */
export function numChosenTargets(batch: DpoBatch): number {
  const { targets, seqLen } = batch.tokens;
  let count = 0;
  for (let i = 0; i < batch.numPairs * (seqLen - 1); i++) count += targets[i];
  return count;
}

/** The batch's units: `pairs` (the preference term's) and `chosen_tokens` (the NLL term's). */
export function dpoUnits(batch: DpoBatch): UnitCounts {
  return { pairs: batch.numPairs, chosen_tokens: numChosenTargets(batch) };
}

/** Collates pairs and their reference values into the chosen-then-rejected layout of `DpoBatch`. */
export function collatePairs(pairs: readonly PreferencePairIds[], reference: { chosen: ArrayLike<number>; rejected: ArrayLike<number> }, padId: number): DpoBatch {
  const sequence = (promptIds: number[], responseIds: number[]) => ({
    ids: [...promptIds, ...responseIds],
    targetMask: [...promptIds.map(() => 0), ...responseIds.map(() => 1)],
  });
  const tokens = padRows([...pairs.map((p) => sequence(p.promptIds, p.chosenIds)), ...pairs.map((p) => sequence(p.promptIds, p.rejectedIds))], padId);
  return { tokens, numPairs: pairs.length, refChosenLogps: Float32Array.from(reference.chosen), refRejectedLogps: Float32Array.from(reference.rejected) };
}

/** What the loss needs besides the batch. */
export interface DpoLossOptions {
  loss: PreferenceLoss;
  beta: number;
  labelSmoothing: number;
  nllCoefficient: number;
  /** Ids masked out of the sequence log-probs (not out of the NLL term). */
  formattingTokenIds: readonly number[];
}

/** Every tensor of one micro-batch's objective. */
export interface DpoTerms {
  /** `pairs`: Σ_p L_pref(h_p); `chosen_tokens`: α · Σ_t nll_t (absent when α = 0). */
  sums: Record<string, tf.Scalar>;
  /** [P] per-pair preference loss. */
  losses: tf.Tensor1D;
  /** Σ_t nll_t over the chosen response tokens (without α). */
  nllSum: tf.Scalar;
  /** [P] each. */
  chosenRewards: tf.Tensor1D;
  rejectedRewards: tf.Tensor1D;
  policyChosenLogps: tf.Tensor1D;
  policyRejectedLogps: tf.Tensor1D;
}

/**
 * The sequence log-probs of a batch's rows under the DPO mask targets × formattingTokenMask(labels)
 * (response tokens minus formatting tokens), and how many tokens each sums over. The policy's
 * terms and the precomputed reference values both come from here, so when the policy equals the
 * reference the two are bit-identical: a row's token log-probs do not depend on its batch (right
 * padding changes no value) and the masked sum only adds exact zeros for padding.
 *
 * @param tokenLogps [R, T−1] from `batchTokenLogprobs`.
 */
export function maskedSequenceLogps(tokenLogps: tf.Tensor2D, tokens: TokenBatch, formattingTokenIds: readonly number[]): { seqLogps: tf.Tensor1D; numTokens: tf.Tensor1D } {
  const { batchSize: rows, seqLen: t } = tokens;
  return tf.tidy(() => {
    const targets = tf.tensor2d(tokens.targets, [rows, t - 1]); // [R, T−1]
    const labels = tf.tensor2d(tokens.labels, [rows, t - 1], 'int32'); // [R, T−1]
    const dpoMask = formattingTokenMask(labels, targets, formattingTokenIds); // [R, T−1]
    return { seqLogps: sequenceLogps(tokenLogps, dpoMask), numTokens: tf.sum(dpoMask, 1) as tf.Tensor1D }; // [R], [R]
  });
}

/**
 * The DPO objective's terms from the policy's token log-probs of a `DpoBatch`. Over a global
 * batch of P pairs and N chosen response tokens the objective is (Llama 3 §4.1.4, TRL's `rpo_alpha`)
 *
 *   L = (1/P) Σ_p L_pref(h_p) + α · (1/N) Σ_t nll_t
 *
 * and this micro-batch gives the two numerators, `sums.pairs = Σ_p L_pref(h_p)` and
 * `sums.chosen_tokens = α · Σ_t nll_t` (the engine, or `normalizedLoss`, divides by P and N).
 * Sequence log-probs are summed under the mask targets × formattingTokenMask(labels) (Llama 3
 * masks header and termination tokens out of both chosen and rejected); the NLL runs over ALL
 * chosen response tokens, formatting tokens included: Llama 3 masks them from the DPO log-probs
 * only, and the NLL term is where the model still learns to emit `<|eot_id|>`.
 *
 * @param tokenLogps [2P, T−1] from `batchTokenLogprobs` (rows laid out as in `DpoBatch`).
 */
export function dpoTerms(tokenLogps: tf.Tensor2D, batch: DpoBatch, opts: DpoLossOptions): DpoTerms {
  const { numPairs: p } = batch;
  const { batchSize: rows, seqLen: t } = batch.tokens;
  if (tokenLogps.shape[0] !== rows || tokenLogps.shape[1] !== t - 1 || rows !== 2 * p) {
    throw new Error(`dpo: token log-probs [${tokenLogps.shape}] do not match a batch of ${p} pairs × ${t} tokens`);
  }
  if (!(opts.nllCoefficient >= 0) || !Number.isFinite(opts.nllCoefficient)) {
    throw new Error(`dpo: nllCoefficient = ${opts.nllCoefficient}; expected a finite number ≥ 0`);
  }
  return tf.tidy(() => {
    const targets = tf.tensor2d(batch.tokens.targets, [rows, t - 1]); // [2P, T−1]
    const { seqLogps, numTokens } = maskedSequenceLogps(tokenLogps, batch.tokens, opts.formattingTokenIds); // [2P], [2P]
    const policyChosenLogps = tf.slice(seqLogps, [0], [p]) as tf.Tensor1D; // [P]
    const policyRejectedLogps = tf.slice(seqLogps, [p], [p]) as tf.Tensor1D; // [P]
    const { losses, chosenRewards, rejectedRewards } = opts.loss.compute(
      {
        policyChosenLogps,
        policyRejectedLogps,
        refChosenLogps: tf.tensor1d(batch.refChosenLogps),
        refRejectedLogps: tf.tensor1d(batch.refRejectedLogps),
        chosenNumTokens: tf.slice(numTokens, [0], [p]) as tf.Tensor1D, // [P]
        rejectedNumTokens: tf.slice(numTokens, [p], [p]) as tf.Tensor1D, // [P]
      },
      { beta: opts.beta, labelSmoothing: opts.labelSmoothing },
    );
    const chosenTokenLogps = tf.slice(tokenLogps, [0, 0], [p, t - 1]) as tf.Tensor2D; // [P, T−1]
    const chosenTargets = tf.slice(targets, [0, 0], [p, t - 1]) as tf.Tensor2D; // [P, T−1]
    const nllSum = tokenNllSum(chosenTokenLogps, chosenTargets);
    const sums: Record<string, tf.Scalar> = { pairs: tf.sum(losses) as tf.Scalar };
    if (opts.nllCoefficient > 0) sums.chosen_tokens = tf.mul(nllSum, opts.nllCoefficient) as tf.Scalar;
    return { sums, losses, nllSum, chosenRewards, rejectedRewards, policyChosenLogps, policyRejectedLogps };
  });
}

/**
 * One micro-batch's objective under the policy (`dpoTerms`' sums) with TRL's metrics as sums:
 * `rewards/*` and `logps/*` over `pairs`, `nll_loss` (without α) over `chosen_tokens`.
 */
export function dpoLoss(model: LlamaModel, batch: DpoBatch, opts: DpoLossOptions): MicroBatchObjective {
  let metrics: Record<string, MetricSum> = {};
  const sums = tf.tidy(() => {
    const terms = dpoTerms(batchTokenLogprobs(model, batch.tokens, { positions: 'targets' }), batch, opts); // every mask ⊆ targets
    const { chosenRewards: chosen, rejectedRewards: rejected } = terms;
    const values = tf
      .stack([
        tf.sum(chosen),
        tf.sum(rejected),
        tf.sum(tf.cast(tf.greater(chosen, rejected), 'float32')), // ties count as wrong
        tf.sum(tf.sub(chosen, rejected)),
        tf.sum(terms.policyChosenLogps),
        tf.sum(terms.policyRejectedLogps),
        terms.nllSum,
      ])
      .dataSync(); // [7]
    const overPairs = (sum: number): MetricSum => ({ sum, unit: 'pairs' });
    metrics = {
      'rewards/chosen': overPairs(values[0]),
      'rewards/rejected': overPairs(values[1]),
      'rewards/accuracies': overPairs(values[2]),
      'rewards/margins': overPairs(values[3]),
      'logps/chosen': overPairs(values[4]),
      'logps/rejected': overPairs(values[5]),
      nll_loss: { sum: values[6], unit: 'chosen_tokens' },
    };
    return terms.sums;
  });
  return { sums, metrics };
}

/**
 * The DPO loss and metrics over held-out batches as one global batch, without gradients: the
 * preference term and `rewards/*`, `logps/*` are exact means over all pairs, the NLL term and
 * `nll_loss` exact means over all chosen response tokens (as in training; an earlier version
 * weighted each batch's NLL mean by its pairs).
 */
export function evaluateDpo(model: LlamaModel, batches: readonly DpoBatch[], opts: DpoLossOptions): Record<string, number> {
  const { loss, metrics, units } = evaluateObjective({ loss: (batch) => dpoLoss(model, batch, opts), unitsOf: dpoUnits }, batches);
  return { ...metrics, loss, num_pairs: units.pairs ?? 0 };
}

/** The task options of a DPO loss: the loss by its name, the rest as they are. */
export function dpoTaskOptions(opts: DpoLossOptions): Record<string, unknown> {
  return {
    lossType: opts.loss.name,
    beta: opts.beta,
    labelSmoothing: opts.labelSmoothing,
    nllCoefficient: opts.nllCoefficient,
    formattingTokenIds: [...opts.formattingTokenIds],
  };
}

/** The loss options back from task options, checked (a worker receives them as untyped data). */
export function dpoLossOptionsOf(options: Record<string, unknown>): DpoLossOptions {
  const { lossType, beta, labelSmoothing, nllCoefficient, formattingTokenIds } = options;
  const loss = typeof lossType === 'string' ? (DPO_LOSSES as Record<string, PreferenceLoss | undefined>)[lossType] : undefined;
  if (!loss) throw new Error(`dpo task: options.lossType must be one of ${Object.keys(DPO_LOSSES).join(', ')}, got ${JSON.stringify(lossType)}`);
  for (const [field, value] of [['beta', beta], ['labelSmoothing', labelSmoothing], ['nllCoefficient', nllCoefficient]] as const) {
    if (typeof value !== 'number' || !Number.isFinite(value)) throw new Error(`dpo task: options.${field} must be a finite number, got ${JSON.stringify(value)}`);
  }
  if (!Array.isArray(formattingTokenIds) || !formattingTokenIds.every((id) => Number.isInteger(id))) {
    throw new Error(`dpo task: options.formattingTokenIds must be an array of token ids, got ${JSON.stringify(formattingTokenIds)}`);
  }
  return { loss, beta: beta as number, labelSmoothing: labelSmoothing as number, nllCoefficient: nllCoefficient as number, formattingTokenIds: formattingTokenIds as number[] };
}

/** Pairs `[start, end)` of a micro-batch as a batch of their own (chosen rows, then rejected rows). */
export function selectPairs(batch: DpoBatch, start: number, end: number): DpoBatch {
  const p = batch.numPairs;
  if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start < end && end <= p)) {
    throw new Error(`dpo task: pair range [${start}, ${end}) is not inside the batch's ${p} pairs`);
  }
  const pairs = Array.from({ length: end - start }, (_, i) => start + i);
  return {
    tokens: selectRows(batch.tokens, [...pairs, ...pairs.map((i) => p + i)]), // [2(b−a), T]
    numPairs: end - start,
    refChosenLogps: batch.refChosenLogps.slice(start, end),
    refRejectedLogps: batch.refRejectedLogps.slice(start, end),
  };
}

/** A micro-batch cut into at most `numParts` contiguous ranges of pairs (sizes differ by at most one). */
export function splitDpoBatch(batch: DpoBatch, numParts: number): DpoBatch[] {
  return evenRowRanges(batch.numPairs, numParts).map(([start, end]) => selectPairs(batch, start, end));
}

/** The DPO (+ NLL) objective on `DpoBatch`es, over `pairs` and `chosen_tokens`. */
export const dpoTask: TaskDefinition<DpoBatch> = {
  kind: DPO_TASK_KIND,
  buildLoss: ({ model, options }) => {
    const lossOptions = dpoLossOptionsOf(options);
    return (batch) => dpoLoss(model, batch, lossOptions);
  },
  unitsOf: dpoUnits,
  splitBatch: splitDpoBatch,
};
