/**
 * The DPO loss as a data-parallel task (`kind: 'dpo'`, see `src/parallel/tasks.ts`): every
 * replica builds `dpoLoss` over its own policy from plain-data options
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
import { selectRows } from '../../data/collate.js';
import { DPO_LOSSES, type PreferenceLoss } from '../../losses/dpo.js';
import { evenRowRanges, type TaskDefinition } from '../parallel/tasks.js';
import { dpoLoss, numChosenTargets, type DpoBatch, type DpoLossOptions } from './dpo.js';

export const DPO_TASK_KIND = 'dpo';

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
  if (!loss) throw new Error(`dpo-task: options.lossType must be one of ${Object.keys(DPO_LOSSES).join(', ')}, got ${JSON.stringify(lossType)}`);
  for (const [field, value] of [['beta', beta], ['labelSmoothing', labelSmoothing], ['nllCoefficient', nllCoefficient]] as const) {
    if (typeof value !== 'number' || !Number.isFinite(value)) throw new Error(`dpo-task: options.${field} must be a finite number, got ${JSON.stringify(value)}`);
  }
  if (!Array.isArray(formattingTokenIds) || !formattingTokenIds.every((id) => Number.isInteger(id))) {
    throw new Error(`dpo-task: options.formattingTokenIds must be an array of token ids, got ${JSON.stringify(formattingTokenIds)}`);
  }
  return { loss, beta: beta as number, labelSmoothing: labelSmoothing as number, nllCoefficient: nllCoefficient as number, formattingTokenIds: formattingTokenIds as number[] };
}

/** Pairs `[start, end)` of a micro-batch as a batch of their own (chosen rows, then rejected rows), with `whole` set. */
export function selectPairs(batch: DpoBatch, start: number, end: number): DpoBatch {
  const p = batch.numPairs;
  if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start < end && end <= p)) {
    throw new Error(`dpo-task: pair range [${start}, ${end}) is not inside the batch's ${p} pairs`);
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
