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
 * The preference loss is a mean over pairs (parts combine exactly by their pair counts); the NLL
 * term is a mean over chosen tokens, which each part rescales by the whole's counts
 * (`DpoBatch.whole`), so a split step computes the same objective as the unsplit one.
 *
 * The reference never runs in a worker: precomputed values travel in the batch, and in
 * `referenceMode: 'resident'` the frozen reference stays in the parent thread, whose `batchesAt`
 * computes its log-probs before the batch is split.
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from '../model/llama.js';
import { padRows, selectRows, type TokenBatch } from '../../data/collate.js';
import { DPO_LOSSES, dpoMetrics, type PreferenceLoss } from '../../losses/dpo.js';
import { sequenceLogps } from '../../losses/logprobs.js';
import { formattingTokenMask } from '../../losses/masks.js';
import { chosenNllLoss, preferenceWithNllLoss } from '../../losses/nll.js';
import type { MicroBatchLoss } from '../train/step-engine.js';
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
  /**
   * Set on a range of pairs of a micro-batch split across data-parallel workers (`src/tasks/dpo.ts`):
   * the whole micro-batch's pairs and chosen target tokens. The NLL term is a mean over the
   * micro-batch's chosen tokens, not over pairs, so a part rescales its own (see `dpoTerms`).
   */
  whole?: { numPairs: number; numChosenTargets: number };
}

/** Target tokens of the chosen rows (0..P−1) of a batch: the NLL term's units. */
export function numChosenTargets(batch: DpoBatch): number {
  const { targets, seqLen } = batch.tokens;
  let count = 0;
  for (let i = 0; i < batch.numPairs * (seqLen - 1); i++) count += targets[i];
  return count;
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
  /** mean(losses) + α · nllLoss. */
  loss: tf.Scalar;
  /** [P] per-pair preference loss. */
  losses: tf.Tensor1D;
  nllLoss: tf.Scalar;
  /** [P] each. */
  chosenRewards: tf.Tensor1D;
  rejectedRewards: tf.Tensor1D;
  policyChosenLogps: tf.Tensor1D;
  policyRejectedLogps: tf.Tensor1D;
}

/**
 * The DPO objective from the policy's token log-probs of a `DpoBatch`:
 *
 *   L = mean_p L_pref(h_p) + α · L_NLL
 *
 * with sequence log-probs summed under the mask targets × formattingTokenMask(labels) (Llama 3
 * masks header and termination tokens out of both chosen and rejected), and L_NLL the mean token
 * cross-entropy over ALL chosen response tokens, formatting tokens included: Llama 3 masks them from
 * the DPO log-probs only, and the NLL term is where the model still learns to emit `<|eot_id|>`.
 *
 * @param tokenLogps [2P, T−1] from `batchTokenLogprobs` (rows laid out as in `DpoBatch`).
 */
export function dpoTerms(tokenLogps: tf.Tensor2D, batch: DpoBatch, opts: DpoLossOptions): DpoTerms {
  const { numPairs: p } = batch;
  const { batchSize: rows, seqLen: t } = batch.tokens;
  if (tokenLogps.shape[0] !== rows || tokenLogps.shape[1] !== t - 1 || rows !== 2 * p) {
    throw new Error(`dpo: token log-probs [${tokenLogps.shape}] do not match a batch of ${p} pairs × ${t} tokens`);
  }
  return tf.tidy(() => {
    const targets = tf.tensor2d(batch.tokens.targets, [rows, t - 1]); // [2P, T−1]
    const labels = tf.tensor2d(batch.tokens.labels, [rows, t - 1], 'int32'); // [2P, T−1]
    const dpoMask = formattingTokenMask(labels, targets, opts.formattingTokenIds); // [2P, T−1]
    const seqLogps = sequenceLogps(tokenLogps, dpoMask); // [2P]
    const policyChosenLogps = tf.slice(seqLogps, [0], [p]) as tf.Tensor1D; // [P]
    const policyRejectedLogps = tf.slice(seqLogps, [p], [p]) as tf.Tensor1D; // [P]
    const { losses, chosenRewards, rejectedRewards } = opts.loss.compute(
      {
        policyChosenLogps,
        policyRejectedLogps,
        refChosenLogps: tf.tensor1d(batch.refChosenLogps),
        refRejectedLogps: tf.tensor1d(batch.refRejectedLogps),
      },
      { beta: opts.beta, labelSmoothing: opts.labelSmoothing },
    );
    const chosenTokenLogps = tf.slice(tokenLogps, [0, 0], [p, t - 1]) as tf.Tensor2D; // [P, T−1]
    const chosenTargets = tf.slice(targets, [0, 0], [p, t - 1]) as tf.Tensor2D; // [P, T−1]
    const nllLoss = wholeBatchNll(chosenNllLoss(chosenTokenLogps, chosenTargets), batch);
    const loss = preferenceWithNllLoss(losses, nllLoss, opts.nllCoefficient);
    return { loss, losses, nllLoss, chosenRewards, rejectedRewards, policyChosenLogps, policyRejectedLogps };
  });
}

/**
 * The NLL term of a part of a split micro-batch, rescaled so that parts combined in proportion
 * to their pairs give the whole's: with the part's P_k pairs and N_k chosen tokens, of the
 * whole's P and N, Σ_k (P_k / P) · nll_k · (N_k / N) · (P / P_k) = Σ_k N_k nll_k / N, the mean
 * over all N chosen tokens. Unsplit batches are returned as they are.
 */
function wholeBatchNll(nllLoss: tf.Scalar, batch: DpoBatch): tf.Scalar {
  const { whole } = batch;
  if (!whole) return nllLoss;
  const scale = whole.numChosenTargets > 0 ? (numChosenTargets(batch) * whole.numPairs) / (whole.numChosenTargets * batch.numPairs) : 0;
  return tf.mul(nllLoss, scale) as tf.Scalar;
}

/** The training loss of one micro-batch under the policy, with TRL's metrics; weight = number of pairs. */
export function dpoLoss(model: LlamaModel, batch: DpoBatch, opts: DpoLossOptions): MicroBatchLoss {
  let metrics: Record<string, number> = {};
  const loss = tf.tidy(() => {
    const terms = dpoTerms(batchTokenLogprobs(model, batch.tokens, { positions: 'targets' }), batch, opts); // every mask ⊆ targets
    metrics = { ...dpoMetrics(terms, terms, terms.nllLoss) };
    return terms.loss;
  });
  return { loss, weight: batch.numPairs, metrics };
}

/**
 * The DPO metrics and loss over held-out batches, without gradients: means over pairs (the NLL is
 * weighted by pairs too, as the training log combines micro-batches).
 */
export function evaluateDpo(model: LlamaModel, batches: readonly DpoBatch[], opts: DpoLossOptions): Record<string, number> {
  const sums: Record<string, number> = {};
  let numPairs = 0;
  for (const batch of batches) {
    const { loss, metrics } = dpoLoss(model, batch, opts);
    const values = { ...metrics, loss: loss.dataSync()[0] };
    loss.dispose();
    for (const [k, v] of Object.entries(values)) sums[k] = (sums[k] ?? 0) + v * batch.numPairs;
    numPairs += batch.numPairs;
  }
  return { ...Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / numPairs])), num_pairs: numPairs };
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

/** Pairs `[start, end)` of a micro-batch as a batch of their own (chosen rows, then rejected rows), with `whole` set. */
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
    whole: batch.whole ?? { numPairs: p, numChosenTargets: numChosenTargets(batch) },
  };
}

/** A micro-batch cut into at most `numParts` contiguous ranges of pairs (sizes differ by at most one). */
export function splitDpoBatch(batch: DpoBatch, numParts: number): DpoBatch[] {
  return evenRowRanges(batch.numPairs, numParts).map(([start, end]) => selectPairs(batch, start, end));
}

/** The DPO (+ NLL) objective on `DpoBatch`es; weight = number of pairs. */
export const dpoTask: TaskDefinition<DpoBatch> = {
  kind: DPO_TASK_KIND,
  buildLoss: ({ model, options }) => {
    const lossOptions = dpoLossOptionsOf(options);
    return (batch) => dpoLoss(model, batch, lossOptions);
  },
  splitBatch: splitDpoBatch,
};
